//! The files gitca writes back to the repository, derived from the state alone: so a rerun after
//! a crash writes what is missing without signing again.

use super::context::{Context, parse_cert};
use crate::adapters::git::Content;
use crate::domain::state::{CertRecord, Index, crl_key, record_key, records_of, round_key};
use base64ct::Encoding;
use der::Encode;
use der::pem::LineEnding;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use x509_cert::Certificate;

pub fn pem(label: &str, der: &[u8]) -> Result<String, String> {
    der::pem::encode_string(label, LineEnding::LF, der).map_err(|e| e.to_string())
}

/// `requests/servers/web-01.yaml` -> `issued/servers/web-01.pem` and `.chain.pem`.
pub fn leaf_paths(out_dir: &str, request_id: &str) -> (String, String) {
    let stem = crate::domain::plan::output_stem(request_id);
    (
        format!("{out_dir}/{stem}.pem"),
        format!("{out_dir}/{stem}.chain.pem"),
    )
}

pub fn ca_pems(ctx: &Context) -> Result<String, String> {
    let mut s = pem(
        "CERTIFICATE",
        &ctx.ca_cert.to_der().map_err(|e| e.to_string())?,
    )?;
    for c in &ctx.chain {
        s.push_str(&pem(
            "CERTIFICATE",
            &c.to_der().map_err(|e| e.to_string())?,
        )?);
    }
    Ok(s)
}

/// Round objects read at a time: each is up to about 10 MB (4,096 records), and only the asked
/// records are kept from it.
const ROUNDS_AT_ONCE: usize = 4;

/// The certificates (DER) of many serials, by serial, from their records, fetched together
/// (concurrently on S3): each round object once, however many of its certificates are asked
/// for, and the records from before rounds one object each. Only the certificates are kept.
pub async fn load_certificates(
    ctx: &Context,
    index: &Index,
    serials: &[&str],
) -> Result<HashMap<String, Vec<u8>>, String> {
    let missing = |serial: &str, key: &str| {
        format!(
            "state record of serial {serial} is missing in {} ({key})",
            ctx.store.describe()
        )
    };
    let mut by_round: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut own: Vec<&str> = Vec::new();
    for &serial in serials {
        match index.certs.get(serial).and_then(|c| c.round.as_deref()) {
            Some(round) => _ = by_round.entry(round).or_default().insert(serial),
            None => own.push(serial),
        }
    }
    let mut found = HashMap::with_capacity(serials.len());
    let keys: Vec<String> = own.iter().map(|s| record_key(s)).collect();
    for ((serial, key), v) in own.iter().zip(&keys).zip(ctx.store.get_many(&keys).await) {
        let v = v
            .map_err(|e| e.to_string())?
            .ok_or_else(|| missing(serial, key))?;
        let rec: CertRecord = serde_json::from_slice(&v.bytes)
            .map_err(|e| format!("state record of serial {serial} is corrupt ({key}): {e}"))?;
        found.insert(serial.to_string(), record_certificate(&rec)?);
    }
    let rounds: Vec<(&str, BTreeSet<&str>)> = by_round.into_iter().collect();
    for group in rounds.chunks(ROUNDS_AT_ONCE) {
        let keys: Vec<String> = group.iter().map(|(r, _)| round_key(r)).collect();
        for (((_, wanted), key), v) in group.iter().zip(&keys).zip(ctx.store.get_many(&keys).await)
        {
            let first = wanted.first().copied().unwrap_or_default();
            let v = v
                .map_err(|e| e.to_string())?
                .ok_or_else(|| missing(first, key))?;
            let recs = records_of(&v.bytes)
                .map_err(|e| format!("state records of round {key} are corrupt: {e}"))?;
            for rec in recs {
                if wanted.contains(rec.serial.as_str()) {
                    found.insert(rec.serial.clone(), record_certificate(&rec)?);
                }
            }
            if let Some(absent) = wanted.iter().find(|s| !found.contains_key(**s)) {
                return Err(missing(absent, key));
            }
        }
    }
    Ok(found)
}

pub fn record_certificate(r: &CertRecord) -> Result<Vec<u8>, String> {
    let b64 = r
        .certificate
        .as_ref()
        .ok_or_else(|| format!("serial {} has no certificate yet", r.serial))?;
    base64ct::Base64::decode_vec(b64).map_err(|e| format!("serial {}: {e}", r.serial))
}

/// Certificates encoded as PEM at a time (`changes`): a few megabytes of DER and PEM held.
const PEM_BATCH: usize = 4096;

/// A certificate's PEM, shared by its leaf and chain files.
type Pem = Arc<[u8]>;

/// Certificates as PEM, by serial, or why they could not be encoded.
type Encoded = Result<HashMap<String, Pem>, String>;

/// At most this many of a run's certificates are encoded beside its state writes: all of a
/// 10,000 issuance's, while the PEM held at once, beside the DER, stays a few megabytes (all of
/// a first issuance of 100,000 raised its peak by 22 MiB).
pub const PEM_BESIDE: usize = 16_384;

/// This run's certificates as PEM, by serial, encoded on a thread of its own from the moment
/// they are all signed and recorded, while the run goes on to its state writes. When a CRL is
/// due, that is the index and CRL writes, mostly on one core, and a 10,000 issuance left the
/// other idle there (perf); otherwise only the index change and the output folder's reading
/// before `changes` waits. Past the cap, the rest stay DER, for `changes` to encode, as all do
/// where no thread can be started. The default holds none.
#[derive(Default)]
pub struct FreshPems {
    encoding: Option<std::thread::JoinHandle<Encoded>>,
    rest: super::apply::FreshCertificates,
}

impl FreshPems {
    /// Starts encoding at most `cap` of `certificates` (DER by serial), each freed as it is
    /// encoded.
    pub fn encode_beside(certificates: super::apply::FreshCertificates, cap: usize) -> FreshPems {
        let spawn = |encode: Box<dyn FnOnce() -> Encoded + Send>| {
            std::thread::Builder::new()
                .name("gitca-pem".into())
                .spawn(encode)
        };
        FreshPems::encode_on(spawn, certificates, cap)
    }

    /// [`FreshPems::encode_beside`] on the thread `spawn` starts.
    fn encode_on(
        spawn: impl FnOnce(
            Box<dyn FnOnce() -> Encoded + Send>,
        ) -> std::io::Result<std::thread::JoinHandle<Encoded>>,
        mut certificates: super::apply::FreshCertificates,
        cap: usize,
    ) -> FreshPems {
        if certificates.is_empty() || cap == 0 {
            return FreshPems::unencoded(certificates);
        }
        // The thread first, the certificates sent once it runs: a spawn that fails drops what
        // it was given, and these must then stay here.
        let (send, receive) = std::sync::mpsc::sync_channel::<Vec<(String, Vec<u8>)>>(1);
        let spawned = spawn(Box::new(move || {
            (receive.recv().unwrap_or_default().into_iter())
                .map(|(serial, der)| Ok((serial, pem("CERTIFICATE", &der)?.into_bytes().into())))
                .collect()
        }));
        let encoding = match spawned {
            Ok(encoding) => encoding,
            Err(e) => {
                tracing::debug!("no thread to encode the certificates beside the state ({e})");
                return FreshPems::unencoded(certificates);
            }
        };
        let mut taken = 0;
        let beside: Vec<(String, Vec<u8>)> = (certificates.extract_if(|_, _| {
            taken += 1;
            taken <= cap
        }))
        .collect();
        if let Err(std::sync::mpsc::SendError(back)) = send.send(beside) {
            // The thread is gone (it cannot end before it receives): these stay DER.
            certificates.extend(back);
        }
        FreshPems {
            encoding: Some(encoding),
            rest: certificates,
        }
    }

    /// None encoded here: `changes` encodes them all.
    fn unencoded(certificates: super::apply::FreshCertificates) -> FreshPems {
        FreshPems {
            encoding: None,
            rest: certificates,
        }
    }

    /// Waits for the encoding: the PEM encoded, and the DER of the rest.
    fn wait(self) -> Result<(HashMap<String, Pem>, super::apply::FreshCertificates), String> {
        let pems = match self.encoding {
            None => HashMap::new(),
            Some(encoding) => encoding
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
        };
        Ok((pems, self.rest))
    }
}

/// Which requests' outputs [`changes`] computes.
pub struct Wanted<'a> {
    /// The requests of the commit (the plan's; among `only`, if given).
    pub present: &'a foldhash::HashSet<&'a str>,
    /// The requests whose certificate may have changed, when the output folder is known to
    /// match the state for every other one (an incremental reconcile); None checks every file.
    pub only: Option<&'a BTreeSet<String>>,
    /// Requests whose certificates are not written, their committed files kept as they are
    /// (see `Plan::withheld_outputs`).
    pub withheld: &'a foldhash::HashSet<&'a str>,
}

/// Computes the changes to the committed tree at `commit`: path -> new content (None deletes),
/// for the requests `wanted_outputs` names.
pub async fn changes(
    ctx: &Context,
    commit: &str,
    index: &Index,
    wanted_outputs: Wanted<'_>,
    fresh: FreshPems,
) -> Result<BTreeMap<String, Option<Content>>, String> {
    let Wanted {
        present,
        only,
        withheld,
    } = wanted_outputs;
    let out_dir = &ctx.config.output.dir;
    let mut wanted = BTreeSet::new();
    let ca = ca_pems(ctx)?;
    let ca_parts: Arc<[u8]> = ca.as_bytes().into();
    let certs = match only {
        None => crate::domain::state::ByRequest::new(index),
        Some(only) => crate::domain::state::ByRequest::of_requests(index, only),
    };
    // Output path -> blob id; a leaf is read only to check its serial, one at a time (all
    // 200,000 output files of 100,000 requests held at once took 400 MB).
    let (ids, existing) = match only {
        None => {
            let mut ids: Vec<&str> = present.iter().copied().collect();
            ids.sort_unstable();
            (ids, ctx.repo.blobs_under(commit, out_dir)?)
        }
        Some(only) => {
            let mut existing = BTreeMap::new();
            for id in only {
                let (leaf, chain) = leaf_paths(out_dir, id);
                for p in [leaf, chain] {
                    if let Some(b) = ctx.repo.blob_at(commit, &p)? {
                        existing.insert(p, b);
                    }
                }
            }
            let ids = (only.iter().map(String::as_str))
                .filter(|id| present.contains(id))
                .collect();
            (ids, existing)
        }
    };

    // Each request's current certificate and output paths, on all cores; then, one at a time,
    // whether its committed files already hold it (none are read in a first issuance, where
    // this was 10,000 requests' paths made on one core with the other idle).
    let current: Vec<(&str, &String, String, String)> = {
        use rayon::prelude::*;
        (ids.par_iter())
            .filter_map(|&id| {
                let (serial, _) = crate::domain::state::ByRequest::current(certs.of(id))?;
                let (leaf, chain) = leaf_paths(out_dir, id);
                Some((id, serial, leaf, chain))
            })
            .collect()
    };
    // Each chain file ends with the CA certificates the bundle holds: where the bundle differs
    // (a renewed CA certificate, a new chain, the bundle edited or moved), every chain file is
    // compared with its leaf and those certificates. A CA change plans in full, so `only` is
    // then None.
    let bundle_differs = ctx
        .repo
        .read_file(commit, &ctx.config.output.bundle)?
        .as_deref()
        != Some(ca.as_bytes());
    let chains_stale = only.is_none() && !existing.is_empty() && bundle_differs;
    if chains_stale {
        tracing::info!("the CA certificates changed: every chain file is checked against them");
    }
    let mut stale = Vec::new();
    let mut chains_only = Vec::new();
    for (id, serial, leaf, chain) in current {
        // Only to tell which existing files go: none where none exist (a first issuance).
        if !existing.is_empty() {
            wanted.insert(leaf.clone());
            wanted.insert(chain.clone());
        }
        if withheld.contains(id) {
            continue;
        }
        let leaf_blob = existing.get(&leaf).and_then(|blob| match ctx.repo.blob(blob) {
            Ok(b) => Some(b),
            Err(e) => {
                // Written again from the state, which restores the object too.
                tracing::warn!(
                    "{leaf}: cannot read blob {blob} from the repository ({e}); writing it again"
                );
                None
            }
        });
        let leaf_is_current = (leaf_blob.as_ref())
            .and_then(|b| match parse_cert(&leaf, b) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("{e}; writing it again from the state");
                    None
                }
            })
            .is_some_and(|c: Certificate| {
                let der = c.tbs_certificate().serial_number().as_bytes();
                crate::domain::serial::is_serial(der, serial)
                    // A chain is assembled from the leaf only as gitca writes it (a PEM
                    // block): another form (DER, text before it, no final newline) would make
                    // a broken chain; such a leaf is written again from the state.
                    && (!chains_stale
                        || (c.to_der().ok())
                            .and_then(|d| pem("CERTIFICATE", &d).ok())
                            .zip(leaf_blob.as_deref())
                            .is_some_and(|(p, b)| p.as_bytes() == b))
            });
        match (leaf_blob, existing.get(&chain)) {
            (Some(leaf_blob), Some(chain_blob)) if leaf_is_current => {
                // The leaf stays; its chain is assembled from it where the CA's part changed,
                // with no certificate fetched from the state.
                if chains_stale {
                    let leaf_blob: Arc<[u8]> = leaf_blob.into();
                    let content = Content::join(&[&leaf_blob, &ca_parts]);
                    if ctx.repo.blob_id(&content.bytes()) != *chain_blob {
                        chains_only.push((chain, Some(content)));
                    }
                }
            }
            _ => stale.push((leaf, chain, serial)),
        }
    }
    // Certificates this run did not sign come from their records, fetched together.
    let (mut fresh, fresh_der) = fresh.wait()?;
    let from_store: Vec<&str> = stale
        .iter()
        .map(|(_, _, serial)| serial.as_str())
        .filter(|serial| !fresh.contains_key(*serial) && !fresh_der.contains_key(*serial))
        .collect();
    // The DER to encode here: fetched, or this run's past the cap.
    let mut loaded = load_certificates(ctx, index, &from_store).await?;
    loaded.extend(fresh_der);
    // Encoded on all cores, a batch at a time (each certificate is held once, as DER or as its
    // PEM files): one core did it for every certificate of an issuance, the other idle.
    let mut written = Vec::with_capacity(2 * stale.len());
    let mut stale = stale.into_iter().peekable();
    while stale.peek().is_some() {
        use rayon::prelude::*;
        let batch: Vec<_> = stale.by_ref().take(PEM_BATCH).collect();
        // This run's PEM, or DER to encode.
        let certs: Vec<Result<Pem, Vec<u8>>> = (batch.iter())
            .map(|(_, _, serial)| match fresh.remove(*serial) {
                Some(pem) => Ok(pem),
                None => Err((loaded.remove(serial.as_str()))
                    .expect("every stale output's certificate was fetched")),
            })
            .collect();
        let pems: Vec<Pem> = certs
            .into_par_iter()
            .map(|cert| match cert {
                Ok(pem) => Ok(pem),
                Err(der) => Ok(pem("CERTIFICATE", &der)?.into_bytes().into()),
            })
            .collect::<Result<_, String>>()?;
        for ((leaf, chain, _), leaf_pem) in batch.into_iter().zip(pems) {
            written.push((chain, Some(Content::join(&[&leaf_pem, &ca_parts]))));
            written.push((leaf, Some(Content::join(&[&leaf_pem]))));
        }
    }
    written.extend(chains_only);
    // Sorted and built at once: 20,000 paths inserted one by one took a few milliseconds.
    let mut changes: BTreeMap<String, Option<Content>> = written.into_iter().collect();
    for path in existing.keys() {
        if !wanted.contains(path) {
            changes.insert(path.clone(), None);
        }
    }

    if bundle_differs {
        changes.insert(
            ctx.config.output.bundle.clone(),
            Some(ca.into_bytes().into()),
        );
    }
    let mut put_if_changed = |path: &str, bytes: Vec<u8>| -> Result<(), String> {
        if ctx.repo.read_file(commit, path)?.as_deref() != Some(&bytes[..]) {
            changes.insert(path.to_string(), Some(bytes.into()));
        }
        Ok(())
    };

    if let Some(crl) = &index.crl {
        let v = ctx
            .store
            .get(&crl_key(crl.number))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "CRL number {} is missing in {}",
                    crl.number,
                    ctx.store.describe()
                )
            })?;
        put_if_changed(
            &ctx.config.output.crl_pem(),
            pem("X509 CRL", &v.bytes)?.into_bytes(),
        )?;
        put_if_changed(&ctx.config.output.crl, v.bytes)?;
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the thread beside the state writes hands over is each certificate's PEM, by its
    /// serial, as `changes` would have encoded it; past the cap, the others' DER as it was
    /// given. None started, none held.
    #[test]
    fn fresh_pems_are_each_certificates_pem_by_serial_and_past_the_cap_its_der() {
        let certificates = |n: usize| -> super::super::apply::FreshCertificates {
            (0..n)
                .map(|i| (format!("{i:05x}"), vec![(i % 251) as u8; 300 + i % 97]))
                .collect()
        };
        for (n, cap) in [
            (50, PEM_BESIDE),
            (PEM_BESIDE, PEM_BESIDE),
            (PEM_BESIDE + 7, PEM_BESIDE),
            (50, 7),
            (50, 0),
        ] {
            let certificates = certificates(n);
            let (pems, rest) = FreshPems::encode_beside(certificates.clone(), cap)
                .wait()
                .unwrap();
            assert_eq!(pems.len(), n.min(cap), "{n}, at most {cap}");
            assert_eq!(pems.len() + rest.len(), n);
            for (serial, der) in &certificates {
                match pems.get(serial) {
                    Some(p) => assert_eq!(**p, *pem("CERTIFICATE", der).unwrap().as_bytes()),
                    None => assert_eq!(rest.get(serial), Some(der), "{serial}"),
                }
            }
        }
        let (pems, rest) = FreshPems::default().wait().unwrap();
        assert!(pems.is_empty() && rest.is_empty());
        let none = FreshPems::encode_beside(Default::default(), PEM_BESIDE);
        assert!(none.encoding.is_none());
    }

    /// Where no thread can be started, every certificate stays DER for `changes` to encode:
    /// none is lost and the run goes on.
    #[test]
    fn fresh_pems_without_a_thread_keep_every_certificates_der() {
        let certificates: super::super::apply::FreshCertificates = (0..20)
            .map(|i| (format!("{i:05x}"), vec![i as u8; 100]))
            .collect();
        let no_thread = |_| Err(std::io::Error::other("no more threads"));
        let fresh = FreshPems::encode_on(no_thread, certificates.clone(), PEM_BESIDE);
        assert!(fresh.encoding.is_none(), "the thread could not start");
        let (pems, rest) = fresh.wait().unwrap();
        assert!(pems.is_empty());
        assert_eq!(rest, certificates);
    }
}
