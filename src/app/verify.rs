//! `gitca verify`: an audit that needs no signing rights. It checks what the repository
//! publishes against the CA key and the state, and reports every disagreement.

use super::context::{Context, parse_cert};
use super::outputs::{leaf_paths, load_certificates};
use crate::domain::csr::{SignatureVerifier, verify_signature};
use crate::domain::plan::{is_revocation_file, request_hashes, request_ids};
use crate::domain::profile::from_time;
use crate::domain::revocation;
use crate::domain::serial::canonical_hex;
use crate::domain::state::Index;
use der::{Decode, Encode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use spki::ObjectIdentifier;
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;
use x509_cert::crl::CertificateList;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditFinding {
    /// Stable kebab-case code (documented in docs/findings.md, "Audit findings").
    pub code: &'static str,
    pub file: String,
    pub message: String,
}

fn f(code: &'static str, file: impl Into<String>, message: impl Into<String>) -> AuditFinding {
    AuditFinding {
        code,
        file: file.into(),
        message: message.into(),
    }
}

const CHAIN_MISMATCH: &str =
    "missing, or not the certificate followed by the CA certificates of gitca.yaml";

/// The CA key's verifiers, parsed (and an EC point checked) once per signature algorithm, not
/// once per certificate. Keyed on the OID, the only part `SignatureVerifier` reads, so
/// certificates with made-up parameters cannot grow it.
#[derive(Default)]
struct CaVerifiers(Vec<(ObjectIdentifier, Result<SignatureVerifier, String>)>);

impl CaVerifiers {
    /// Whether `cert`'s signature verifies with the CA's key.
    fn signed_by(
        &mut self,
        ca_key: &spki::SubjectPublicKeyInfoOwned,
        cert: &x509_cert::Certificate,
    ) -> Result<bool, String> {
        let tbs_der = cert.tbs_certificate().to_der().map_err(|e| e.to_string())?;
        let sig = cert.signature().as_bytes().unwrap_or_default();
        let alg = cert.signature_algorithm();
        let at = match self.0.iter().position(|(oid, _)| *oid == alg.oid) {
            Some(at) => at,
            None => {
                self.0.push((alg.oid, SignatureVerifier::new(ca_key, alg)));
                self.0.len() - 1
            }
        };
        Ok((self.0[at].1.as_ref()).is_ok_and(|v| v.verify(&tbs_der, sig).is_ok()))
    }
}

/// The certificates a file holds: its CERTIFICATE blocks in PEM, or one in DER. A PEM block of
/// another kind is an error: a private key beside a certificate would be served with it.
fn certificates_in(path: &str, bytes: &[u8]) -> Result<Vec<x509_cert::Certificate>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let Some(text) = std::str::from_utf8(bytes)
        .ok()
        .filter(|t| t.contains("-----BEGIN"))
    else {
        return parse_cert(path, bytes).map(|c| vec![c]);
    };
    if let Some(other) = (text.split("-----BEGIN ").skip(1))
        .map(|rest| rest.split("-----").next().unwrap_or_default())
        .find(|label| *label != "CERTIFICATE")
    {
        return Err(format!(
            "{path}: holds a PEM block {other:?}, not only certificates"
        ));
    }
    let mut certs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            return Err(format!("{path}: a certificate block has no end line"));
        };
        let block = &rest[start..start + len + END.len()];
        certs.push(parse_cert(path, block.as_bytes())?);
        rest = &rest[start + len + END.len()..];
    }
    if certs.is_empty() {
        return Err(format!("{path}: not a certificate: no CERTIFICATE block"));
    }
    Ok(certs)
}

pub async fn audit(
    ctx: &Context,
    index: &Index,
    now: OffsetDateTime,
) -> Result<Vec<AuditFinding>, String> {
    let mut out = Vec::new();
    // A request, policy or revocation file gitca cannot name: plan and apply refuse the commit.
    if let Some(path) = crate::domain::plan::unnamed_input(&ctx.snapshot, &ctx.config) {
        out.push(f(
            "name-not-utf8",
            path,
            "a name that is not UTF-8 where gitca lists its inputs; plan and apply refuse the \
             commit until it is renamed or removed",
        ));
    }
    // The bundle, and each chain file after its leaf: the CA certificates gitca.yaml names.
    let ca_certs: Vec<x509_cert::Certificate> = std::iter::once(&ctx.ca_cert)
        .chain(&ctx.chain)
        .cloned()
        .collect();
    // Before the first apply there is no bundle. Where it differs (the CA certificate renewed
    // and not yet applied), that one finding stands for every chain file's CA part too.
    let bundle = &ctx.config.output.bundle;
    let bundle_current = index.last_reconciled.is_none()
        || (ctx.repo.read_file(&ctx.snapshot.commit, bundle)?).is_some_and(|b| {
            x509_cert::Certificate::load_pem_chain(&b).is_ok_and(|c| c == ca_certs)
        });
    if !bundle_current {
        out.push(f(
            "bundle-mismatch",
            bundle.clone(),
            "missing, or not the CA certificates of gitca.yaml",
        ));
    }
    let ca = ctx.ca_cert.tbs_certificate();
    let ca_key = ca.subject_public_key_info();
    let out_dir = &ctx.config.output.dir;
    let committed = ctx.repo.files_under(&ctx.snapshot.commit, out_dir)?;
    let mut seen_serials = BTreeSet::new();
    let mut against_state = Vec::new();
    let hashes = request_hashes(&ctx.snapshot, &ctx.config)?;
    let mut verifiers = CaVerifiers::default();

    // The chain files of every request the commit or the state knows, with their leaf: checked
    // with it when it is there, only those, since a request may be named `web.chain.yaml`,
    // whose certificate is `web.chain.pem`.
    let chain_files: BTreeMap<String, String> = (hashes.keys())
        .chain(index.certs.values().map(|c| &c.request_id))
        .map(|id| {
            let (leaf, chain) = leaf_paths(out_dir, id);
            (chain, leaf)
        })
        .collect();
    // Every other file that holds certificates is checked, whatever its name, each certificate
    // in it but the CA's: a certificate committed as `.crt` or `.der`, a full chain, a chain
    // file without its leaf (revoked, or another CA's) is served too. Of files that hold none,
    // only a `.pem` is a finding: a README or .gitkeep beside the certificates is none.
    for (path, bytes) in &committed {
        if (chain_files.get(path)).is_some_and(|leaf| committed.contains_key(leaf)) {
            continue;
        }
        let certs = match certificates_in(path, bytes) {
            Ok(c) => c,
            // A `.pem`, or any file in PEM (a `.crt` with a key appended): a README is none.
            Err(e) if path.ends_with(".pem") || bytes.windows(11).any(|w| w == b"-----BEGIN ") => {
                out.push(f("cert-unparsable", path, e));
                continue;
            }
            Err(_) => continue,
        };
        // As gitca writes a certificate: one, in PEM.
        let as_written = certs.len() == 1 && bytes.starts_with(b"-----BEGIN CERTIFICATE-----");
        for cert in certs.iter().filter(|c| !ca_certs.contains(c)) {
            if cert.tbs_certificate().issuer() != ca.subject()
                || !verifiers.signed_by(ca_key, cert)?
            {
                out.push(f(
                    "cert-not-from-ca",
                    path,
                    "not signed by the issuing CA's key",
                ));
                continue;
            }
            let serial =
                base16ct::lower::encode_string(cert.tbs_certificate().serial_number().as_bytes());
            let serial = serial.trim_start_matches("00").to_string();
            let Some(summary) = index.certs.get(&serial) else {
                out.push(f(
                    "cert-not-in-state",
                    path,
                    format!("serial {serial} is not in the state"),
                ));
                continue;
            };
            let (leaf, chain) = leaf_paths(out_dir, &summary.request_id);
            if &leaf != path {
                out.push(f(
                    "cert-wrong-path",
                    path,
                    format!(
                        "serial {serial} belongs to {}, expected at {leaf}",
                        summary.request_id
                    ),
                ));
            } else {
                // At its own path: compared with the state below, once every record is fetched
                // (by digest, so 100,000 certificates are not held twice), the finding keeping
                // its place among this file's; and its chain file checked.
                seen_serials.insert(serial.clone());
                let der = cert.to_der().map_err(|e| e.to_string())?;
                against_state.push((
                    out.len(),
                    path,
                    serial.clone(),
                    Sha256::digest(der),
                    as_written,
                ));
                match (committed.get(&chain)).map(|c| x509_cert::Certificate::load_pem_chain(c)) {
                    Some(Ok(certs))
                        if certs.first() == Some(cert)
                            && (!bundle_current || certs[1..] == ca_certs[..]) => {}
                    _ => out.push(f("chain-mismatch", chain.clone(), CHAIN_MISMATCH)),
                }
            }
            if summary.revoked.is_some() {
                out.push(f(
                    "cert-revoked-in-repo",
                    path,
                    format!("serial {serial} is revoked but still published"),
                ));
            }
            match hashes.get(&summary.request_id) {
            None => out.push(f(
                "cert-without-request",
                path,
                format!("request {} is not in the commit", summary.request_id),
            )),
            Some(Err(e)) => out.push(f(
                "request-unreadable",
                summary.request_id.clone(),
                format!(
                    "serial {serial} was issued for this request, which cannot be read now: {e}"
                ),
            )),
            Some(Ok(h)) if *h != summary.request_hash => out.push(f(
                "request-changed-since-issue",
                summary.request_id.clone(),
                format!(
                    "serial {serial} was issued for another version of the request (apply pending)"
                ),
            )),
            Some(_) => {}
        }
        }
    }
    let serials: Vec<&str> = against_state.iter().map(|c| c.2.as_str()).collect();
    let recorded = load_certificates(ctx, index, &serials).await?;
    for (at, path, serial, digest, as_written) in against_state.into_iter().rev() {
        let same = Sha256::digest(&recorded[&serial]) == digest;
        if !same || !as_written {
            out.insert(
                at,
                f(
                    "cert-hand-edited",
                    path,
                    match same {
                        false => "differs from the certificate in the state",
                        true => "the certificate of the state, but not as gitca writes it (one certificate, PEM)",
                    },
                ),
            );
        }
    }

    // Current certificates the repository does not have at their path.
    let current = index.current_all();
    for id in &request_ids(&ctx.snapshot, &ctx.config)? {
        if let Some((serial, _)) = current.get(id.as_str()).copied()
            && !seen_serials.contains(serial)
        {
            out.push(f(
                "cert-missing-in-repo",
                leaf_paths(out_dir, id).0,
                format!("serial {serial} of {id} is in the state, not in the repository"),
            ));
        }
    }

    // Published revocations must still be in the history, each under the key the plan gives
    // it (a raise to key compromise has its own).
    let mut entries = Vec::new();
    for (path, entry) in &ctx.snapshot.files {
        if let (true, crate::domain::plan::TreeEntry::Blob(b)) = (is_revocation_file(path), entry) {
            entries.extend(
                revocation::parse_file(path, &String::from_utf8_lossy(b))?
                    .into_iter()
                    .flatten(),
            );
        }
    }
    if let Some(c) = &ctx.config.serverless {
        let layout = crate::domain::serverless_layout::read(&ctx.snapshot, c)?;
        entries.extend(layout.revocations.into_iter().filter_map(|(_, e)| e.ok()));
    }
    let twice = crate::domain::plan::tell_entries_apart(&mut entries, &index.revocations);
    let by_key: BTreeMap<&str, &revocation::Entry> = (entries.iter().enumerate())
        .filter(|(n, _)| !twice.contains(n))
        .map(|(_, e)| (e.key.as_str(), e))
        .collect();
    for (k, p) in &index.revocations {
        match by_key.get(k.as_str()) {
            None => out.push(f(
                "revocation-disappeared",
                p.file.clone(),
                format!("published revocation {k} is no longer in the repository"),
            )),
            // The CRL keeps the published reason and date; the history now says otherwise.
            Some(e) if !crate::domain::plan::published_as(e, p) => out.push(f(
                "revocation-changed",
                e.file.clone(),
                format!(
                    "published revocation {k} was changed (published: reason {:?}, date {}); revocations are append-only",
                    p.reason,
                    p.written_date
                        .map(crate::app::render::rfc3339)
                        .unwrap_or_else(|| "the commit's time".into())
                ),
            )),
            Some(_) => {}
        }
    }

    // The CRL: present, signed by the CA, current, the newest, complete.
    let crl_path = &ctx.config.output.crl;
    if let Some(info) = &index.crl {
        match ctx.repo.read_file(&ctx.snapshot.commit, crl_path)? {
            None => out.push(f(
                "crl-missing",
                crl_path.clone(),
                "no CRL in the repository",
            )),
            Some(der) => match CertificateList::from_der(&der) {
                Err(e) => out.push(f("crl-unparsable", crl_path.clone(), e.to_string())),
                Ok(crl) => {
                    let list: &CertificateList = &crl;
                    let tbs = list.tbs_cert_list.to_der().map_err(|e| e.to_string())?;
                    if verify_signature(
                        ca_key,
                        &list.signature_algorithm,
                        &tbs,
                        list.signature.as_bytes().unwrap_or_default(),
                    )
                    .is_err()
                    {
                        out.push(f(
                            "crl-bad-signature",
                            crl_path.clone(),
                            "not signed by the issuing CA's key",
                        ));
                    }
                    if list
                        .tbs_cert_list
                        .next_update
                        .is_none_or(|n| from_time(&n) <= now)
                    {
                        out.push(f(
                            "crl-stale",
                            crl_path.clone(),
                            "nextUpdate has passed; run gitca crl",
                        ));
                    }
                    // Relying parties refuse a CRL not yet valid (openssl: "CRL is not yet
                    // valid"), so until then none of its revocations is checked. Five minutes
                    // of skew, as certificates and CRLs are backdated: a clock slightly behind is none.
                    if from_time(&list.tbs_cert_list.this_update) > now + time::Duration::minutes(5)
                    {
                        out.push(f(
                            "crl-not-yet-valid",
                            crl_path.clone(),
                            "thisUpdate is in the future (signed on a clock ahead); relying parties refuse it until then",
                        ));
                    }
                    let listed: BTreeSet<String> = list
                        .tbs_cert_list
                        .revoked_certificates
                        .iter()
                        .flatten()
                        .map(|r| {
                            canonical_hex(&base16ct::lower::encode_string(
                                r.serial_number.as_bytes(),
                            ))
                        })
                        .collect();
                    // The state keeps gitca's serials as full bytes, a previous CA's as
                    // canonical hex (no leading zero nibble): both compared canonically.
                    for s in index.crl_serials(now, ctx.config.crl.lifetime.as_time()) {
                        if !listed.contains(&canonical_hex(&s)) {
                            out.push(f(
                                "crl-missing-serial",
                                crl_path.clone(),
                                format!("revoked serial {s} is not on the CRL"),
                            ));
                        }
                    }
                    let crl_pem = ctx.config.output.crl_pem();
                    let want = super::outputs::pem("X509 CRL", &der)?;
                    if (ctx.repo.read_file(&ctx.snapshot.commit, &crl_pem)?).as_deref()
                        != Some(want.as_bytes())
                    {
                        out.push(f(
                            "crl-pem-mismatch",
                            crl_pem,
                            format!("missing, or not the PEM of {crl_path}"),
                        ));
                    }
                    let number = crate::adapters::publish::crl_number(&der).unwrap_or(0);
                    if number != info.number {
                        out.push(f(
                            "crl-outdated",
                            crl_path.clone(),
                            format!("CRL number {number}, the state has {}", info.number),
                        ));
                    }
                }
            },
        }
    }
    Ok(out)
}
