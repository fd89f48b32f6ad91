//! The issued state: what the CA has signed, revoked and published. Plain data; the store
//! adapters persist it (`index.json` by compare-and-swap, one record per certificate).

use super::revocation::Reason;
use foldhash::HashMapExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use time::OffsetDateTime;

pub const INDEX_KEY: &str = "index.json";
/// One round of issuance's intents, named by the round's first serial: one object per round,
/// not per certificate, so a round costs one durable write (one PUT) and one delete.
pub fn intent_key(first_serial: &str) -> String {
    format!("intents/{first_serial}.json")
}

/// A round's records (its intents, then its certificates) as the JSON array `intents_of`
/// reads, into `out` (replacing what it held), sized up front: a round of 4,096 certificates
/// is 6 MB, which a growing buffer copies and faults in again at each doubling. An issuance
/// reuses one buffer for every round's intents and records: its pages are reused, not faulted
/// in afresh for each object.
///
/// The records are encoded in parts on all cores and the parts joined: the bytes serde_json
/// writes for the whole array. On one core, a round's intents and records each left the other
/// core idle for a few milliseconds.
pub fn records_json_into(out: &mut Vec<u8>, recs: &[&CertRecord]) -> Result<(), serde_json::Error> {
    /// Records per piece: enough that a piece is worth a task, few enough to spread a round.
    const PER_PIECE: usize = 128;
    out.clear();
    out.reserve(2 + recs.iter().map(|r| r.json_len_hint() + 1).sum::<usize>());
    out.push(b'[');
    splice_in_pieces(out, recs, PER_PIECE, serde_json::to_vec)?;
    out.push(b']');
    Ok(())
}

/// Appends to `out` the elements of the JSON array or object `render` makes of `items`, as
/// serde_json writes them for one whole container: rendered in pieces of `per_piece` on all
/// cores, each a whole container whose brackets are dropped, joined by commas. A piece per core
/// at a time, appended as it comes: every piece held at once would double the memory of a
/// large write.
fn splice_in_pieces<T: Sync>(
    out: &mut Vec<u8>,
    items: &[T],
    per_piece: usize,
    render: impl Fn(&[T]) -> serde_json::Result<Vec<u8>> + Sync,
) -> serde_json::Result<()> {
    use rayon::prelude::*;
    let batch = per_piece * rayon::current_num_threads().max(1);
    for (b, items) in items.chunks(batch).enumerate() {
        let pieces: Vec<Vec<u8>> = items
            .par_chunks(per_piece)
            .map(&render)
            .collect::<serde_json::Result<_>>()?;
        for (n, piece) in pieces.iter().enumerate() {
            if b + n > 0 {
                out.push(b',');
            }
            // Each piece is a whole container, `[...]` or `{...}`: its elements only.
            out.extend_from_slice(&piece[1..piece.len() - 1]);
        }
    }
    Ok(())
}

/// The records an intent object holds: a round's (a JSON array), or the one certificate of an
/// intent written before rounds shared an object (a JSON object).
pub fn intents_of(bytes: &[u8]) -> Result<Vec<CertRecord>, serde_json::Error> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(bytes),
        _ => serde_json::from_slice(bytes).map(|one| vec![one]),
    }
}
/// The record of one certificate, as gitca wrote them before a round's records shared one
/// object; still read for the certificates whose index entry names no round.
pub fn record_key(serial: &str) -> String {
    format!("certs/{serial}.json")
}
/// The records of one round of issuance (a JSON array), named like its intent object by the
/// round's first serial: a round of 4,096 certificates costs one durable write (one PUT), not
/// 4,096.
pub fn round_key(round: &str) -> String {
    format!("certs/rounds/{round}.json")
}
/// The records a round object holds.
pub fn records_of(bytes: &[u8]) -> Result<Vec<CertRecord>, serde_json::Error> {
    serde_json::from_slice(bytes)
}
pub fn crl_key(number: u64) -> String {
    format!("crls/{number:020}.crl")
}

/// The manifest a reconcile reads: one object, so a no-op run needs one GET.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// SHA-256 of the CA certificate's SubjectPublicKeyInfo: a state belongs to one CA key.
    pub ca_key_id: String,
    /// The reviewed (source) commit the last apply reconciled.
    #[serde(default)]
    pub last_reconciled: Option<String>,
    /// Issued certificates by serial (lower-case hex).
    #[serde(default)]
    pub certs: Certs,
    /// Revocation entries that have been published, by entry key; append-only.
    #[serde(default)]
    pub revocations: BTreeMap<String, PublishedRevocation>,
    #[serde(default)]
    pub crl: Option<CrlInfo>,
    /// The highest CRL number ever reserved; the next CRL takes a higher one.
    #[serde(default)]
    pub crl_number: u64,
    /// The highest CRL number uploaded to the publication bucket.
    #[serde(default)]
    pub published_crl_number: u64,
    /// Until when expiry events have been sent: thresholds crossed before it are not sent again.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub events_checked_at: Option<OffsetDateTime>,
    /// Events a notification channel failed to take, sent again by the next apply (at least
    /// once, at most [`super::events::MAX_UNDELIVERED`] per channel).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub undelivered_events: super::events::Undelivered,
    /// Serials of the serverless CA's `revoked.json` that gitca did not issue but lists on its
    /// CRL (`serverless.revoke_previous_serials`), by serial.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub previous_ca: BTreeMap<String, PreviousCaRevocation>,
    /// The state key of the base: an index object written whole now and then, which holds the
    /// certificates this one does not store itself. Between two bases a run writes only the
    /// certificates changed since the last, not all of them. An index without one stores every
    /// certificate (small CAs, and every index before bases existed). gitca versions before
    /// bases refuse an index that names one (an unknown field), rather than miss certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

/// The index's certificates by serial, and which of them the index object stores itself.
/// Read through `Deref`; changed only through `insert` and `get_mut`, which keep that record,
/// so no change can miss the next write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Certs {
    map: BTreeMap<String, CertSummary>,
    /// None: the index object stores every certificate. Some (the index names a base): the
    /// ones it stores, read from it or changed since; the base holds the others.
    own: Option<BTreeSet<String>>,
}

impl std::ops::Deref for Certs {
    type Target = BTreeMap<String, CertSummary>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<'a> IntoIterator for &'a Certs {
    type Item = (&'a String, &'a CertSummary);
    type IntoIter = std::collections::btree_map::Iter<'a, String, CertSummary>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl Certs {
    pub fn insert(&mut self, serial: String, cert: CertSummary) -> Option<CertSummary> {
        if let Some(own) = &mut self.own {
            own.insert(serial.clone());
        }
        self.map.insert(serial, cert)
    }

    pub fn get_mut(&mut self, serial: &str) -> Option<&mut CertSummary> {
        if let Some(own) = &mut self.own
            && self.map.contains_key(serial)
        {
            own.insert(serial.to_string());
        }
        self.map.get_mut(serial)
    }

    /// How many certificates the index object stores itself.
    pub fn stored_len(&self) -> usize {
        self.own.as_ref().map_or(self.map.len(), BTreeSet::len)
    }

    /// The certificates the index object stores itself, in serial order.
    fn stored(&self) -> Vec<(&String, &CertSummary)> {
        match &self.own {
            None => self.map.iter().collect(),
            Some(own) => own
                .iter()
                .filter_map(|s| self.map.get_key_value(s))
                .collect(),
        }
    }
}

impl Serialize for Certs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.own {
            None => s.collect_map(&self.map),
            Some(_) => s.collect_map(self.stored()),
        }
    }
}

impl<'de> Deserialize<'de> for Certs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Certs {
            map: certs_in_bulk(d)?,
            own: None,
        })
    }
}

/// An index object stores at most this many certificates itself, or an eighth of all if more,
/// before they go to a new base: below it an index is one object, as before bases.
pub const BASE_MIN: usize = 4096;

/// Certificates per piece of an index written on all cores: small enough to share the work,
/// large enough to be worth a task.
const CERTS_PER_PIECE: usize = 8192;

/// A map built in one pass when its keys come sorted and unique (as written); otherwise one
/// insert at a time, the last of a repeated key winning, as a map read entry by entry does.
pub fn map_from_pairs<K: Ord, V>(pairs: Vec<(K, V)>) -> BTreeMap<K, V> {
    if pairs.windows(2).all(|w| w[0].0 < w[1].0) {
        pairs.into_iter().collect()
    } else {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            map.insert(k, v);
        }
        map
    }
}

/// The index's certificates, read into a list and built into the map in one pass: inserting
/// 100,000 serials one at a time into a tree costs a fifth of the index's parse.
fn certs_in_bulk<'de, D>(d: D) -> Result<BTreeMap<String, CertSummary>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Pairs;
    impl<'de> serde::de::Visitor<'de> for Pairs {
        type Value = Vec<(String, CertSummary)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of serials to certificates")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::with_capacity(m.size_hint().unwrap_or(0));
            while let Some(pair) = m.next_entry()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    d.deserialize_map(Pairs).map(map_from_pairs)
}

/// A revocation of a certificate the previous CA issued with the same key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousCaRevocation {
    pub revoked: Revoked,
    /// The certificate's notAfter is unknown; it is at most the previous CA's maximum lifetime
    /// after the revocation was first seen, so the entry stays on the CRL until then.
    #[serde(with = "time::serde::rfc3339")]
    pub keep_until: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertSummary {
    pub request_id: String,
    pub request_hash: String,
    pub key_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Absent when not revoked, as most are: `null` was 15 bytes of every index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revoked>,
    /// The round whose object (`round_key`) holds this certificate's record; None: the record
    /// is its own object (`record_key`), as before rounds. gitca versions before rounds refuse
    /// an index with this field (an unknown field) rather than look for the record elsewhere.
    /// Shared: the certificates a run issues hold one copy per round, not one each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<std::sync::Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    pub reason: Reason,
    #[serde(with = "time::serde::rfc3339")]
    pub date: OffsetDateTime,
    /// The revocation entry key, or `orphan` when the request file was removed.
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedRevocation {
    pub reason: Reason,
    /// The date as written in the entry (None: the commit time was used).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub written_date: Option<OffsetDateTime>,
    pub file: String,
    pub serials: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlInfo {
    pub number: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub this_update: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub next_update: OffsetDateTime,
    /// The serials listed, sorted; a different set means the CRL is stale.
    pub serials: Vec<String>,
}

/// The base64 of a record's DER (`tbs`, `certificate`): the standard alphabet, padded, as
/// base64ct reads it back. Certificates are public, so base64ct's constant time buys nothing on
/// the issuance's hot path, where it is 5x slower than base64-simd.
pub fn der_base64(der: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(der)
}

/// One issued certificate (or, in `intents/`, one about to be signed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRecord {
    pub serial: String,
    pub request_id: String,
    pub request_hash: String,
    pub key_id: String,
    /// Base64 DER of the TBSCertificate that was (or will be) signed.
    pub tbs: String,
    /// Base64 DER of the signed certificate; absent in an intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

impl CertRecord {
    /// Its JSON's length when no character needs escaping (base64, hex and request paths):
    /// the values and, in `JSON_FRAME`, the names, quotes and separators.
    fn json_len_hint(&self) -> usize {
        const JSON_FRAME: usize = 96;
        JSON_FRAME
            + self.serial.len()
            + self.request_id.len()
            + self.request_hash.len()
            + self.key_id.len()
            + self.tbs.len()
            + self.certificate.as_ref().map_or(0, String::len)
    }
}

impl CertSummary {
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.revoked.is_none() && self.not_after > now
    }

    /// Within `renew_before` of expiry, but never in the first two thirds of its life:
    /// short-lived certificates (a 1-day SVID with a 10-day renew_before) would otherwise be
    /// renewed on every run.
    pub fn renewal_due(&self, now: OffsetDateTime, renew_before: time::Duration) -> bool {
        self.renewal_at(renew_before) <= now
    }

    /// When [`CertSummary::renewal_due`] turns true.
    pub fn renewal_at(&self, renew_before: time::Duration) -> OffsetDateTime {
        renewal_at(self.not_before, self.not_after, renew_before)
    }
}

/// When a certificate valid from `not_before` to `not_after` is due for renewal: `renew_before`
/// ahead of its end, but never in the first two thirds of its life.
pub fn renewal_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    renew_before: time::Duration,
) -> OffsetDateTime {
    not_after - renew_before.min((not_after - not_before) / 3)
}

/// The index's certificates grouped by request (the index is keyed by serial), with the keys
/// revoked for key compromise. Borrowed, in a fast hash map of inline vectors (most requests
/// have one certificate): at 100,000 certificates it is built in a few milliseconds.
pub struct ByRequest<'a> {
    by_request: foldhash::HashMap<&'a str, Mine<'a>>,
    /// Key ids of certificates revoked for key compromise, sorted.
    compromised: Vec<&'a str>,
    /// Serials a plan revokes, before the index says so (see [`ByRequest::revoking`]).
    revoking: foldhash::HashSet<&'a str>,
}

/// The certificates of one request, in serial order; most requests have one.
type Mine<'a> = smallvec::SmallVec<[(&'a String, &'a CertSummary); 1]>;

impl<'a> ByRequest<'a> {
    pub fn new(index: &'a Index) -> Self {
        ByRequest::of_certs(index.certs.iter(), index.certs.len())
    }

    /// Like [`ByRequest::new`], holding only the certificates of `ids` (and only their key
    /// compromises): for the few requests a run touched, one pass instead of a map of all.
    pub fn of_requests(index: &'a Index, ids: &BTreeSet<String>) -> Self {
        let mine = (index.certs.iter()).filter(|(_, c)| ids.contains(c.request_id.as_str()));
        ByRequest::of_certs(mine, ids.len())
    }

    /// Groups `certs` by request (room for `requests` of them up front).
    fn of_certs(
        certs: impl Iterator<Item = (&'a String, &'a CertSummary)>,
        requests: usize,
    ) -> Self {
        let mut by_request: foldhash::HashMap<&str, Mine> =
            foldhash::HashMap::with_capacity(requests);
        let mut compromised = Vec::new();
        for (s, c) in certs {
            by_request
                .entry(c.request_id.as_str())
                .or_default()
                .push((s, c));
            if c.revoked
                .as_ref()
                .is_some_and(|r| r.reason == Reason::KeyCompromise)
            {
                compromised.push(c.key_id.as_str());
            }
        }
        compromised.sort_unstable();
        ByRequest {
            by_request,
            compromised,
            revoking: Default::default(),
        }
    }

    /// The certificates of one request.
    pub fn of(&self, id: &str) -> &[(&'a String, &'a CertSummary)] {
        self.by_request.get(id).map_or(&[], |v| v.as_slice())
    }

    /// Every request with certificates, with them (in no particular order).
    pub fn groups(&self) -> impl Iterator<Item = &[(&'a String, &'a CertSummary)]> {
        self.by_request.values().map(|v| v.as_slice())
    }

    /// The newest unrevoked certificate (possibly expired): the one the repository serves.
    pub fn current(
        mine: &[(&'a String, &'a CertSummary)],
    ) -> Option<(&'a String, &'a CertSummary)> {
        mine.iter()
            .filter(|(_, c)| c.revoked.is_none())
            .max_by_key(|(s, c)| (c.not_before, *s))
            .copied()
    }

    /// The newest certificate, revoked or not.
    pub fn newest(mine: &[(&'a String, &'a CertSummary)]) -> Option<&'a CertSummary> {
        mine.iter().map(|(_, c)| *c).max_by_key(|c| c.not_before)
    }

    /// Was a certificate for `key_id` revoked for key compromise, by any request?
    pub fn key_compromised(&self, key_id: &str) -> bool {
        self.compromised.binary_search(&key_id).is_ok()
    }

    /// Counts the serials this plan revokes as revoked, and the keys it revokes for key
    /// compromise as compromised, before the index says so: the run that revokes a
    /// certificate decides its request as the runs after it will.
    pub fn revoking(
        &mut self,
        serials: impl IntoIterator<Item = &'a str>,
        compromised_keys: impl IntoIterator<Item = &'a str>,
    ) {
        self.revoking.extend(serials);
        self.compromised.extend(compromised_keys);
        self.compromised.sort_unstable();
    }

    /// Whether the newest of `mine` is revoked (or revoked by this plan) and of this very
    /// request (`request_hash`): the request gets no new certificate until it changes.
    pub fn revoked_as_is(
        &self,
        mine: &[(&'a String, &'a CertSummary)],
        request_hash: &str,
    ) -> bool {
        mine.iter()
            .max_by_key(|(_, c)| c.not_before)
            .is_some_and(|(serial, c)| {
                (c.revoked.is_some() || self.revoking.contains(serial.as_str()))
                    && c.request_hash == request_hash
            })
    }

    /// The index by request and its live keys, built on two cores (each is a pass over every
    /// certificate, 20–40 ms at 100,000).
    pub fn with_live_keys(index: &'a Index, now: OffsetDateTime) -> (Self, LiveKeys<'a>) {
        rayon::join(|| ByRequest::new(index), || LiveKeys::of(index, now))
    }
}

impl<'a> LiveKeys<'a> {
    /// Which requests hold a live certificate for each key (the key-reuse check).
    pub fn of(index: &'a Index, now: OffsetDateTime) -> LiveKeys<'a> {
        let mut held: foldhash::HashMap<&str, smallvec::SmallVec<[&str; 1]>> =
            foldhash::HashMap::with_capacity(index.certs.len());
        for c in index.certs.values().filter(|c| c.is_live(now)) {
            let ids = held.entry(c.key_id.as_str()).or_default();
            if !ids.contains(&c.request_id.as_str()) {
                ids.push(c.request_id.as_str());
            }
        }
        LiveKeys {
            held,
            planned: foldhash::HashMap::default(),
        }
    }
}

/// Keys with a live certificate, and keys planned for issuance in this run, with the requests
/// holding them.
pub struct LiveKeys<'a> {
    held: foldhash::HashMap<&'a str, smallvec::SmallVec<[&'a str; 1]>>,
    /// Hashed, not ordered: a first issuance plans every request, one entry each, on the one
    /// thread that decides (perf: freeing a tree of 10,000 entries and sets took about 5 ms at
    /// the end of the plan, with the other core idle).
    planned: foldhash::HashMap<String, smallvec::SmallVec<[String; 1]>>,
}

impl LiveKeys<'_> {
    /// The first request other than `id` (in id order) holding `key_id`.
    pub fn other_than(&self, key_id: &str, id: &str) -> Option<&str> {
        let held = self.held.get(key_id).into_iter().flatten();
        let held = held.map(|r| -> &str { r });
        let planned = self
            .planned
            .get(key_id)
            .into_iter()
            .flatten()
            .map(String::as_str);
        held.chain(planned).filter(|r| *r != id).min()
    }

    /// `id` will hold `key_id` once this run issues.
    pub fn plan(&mut self, key_id: &str, id: &str) {
        let ids = self.planned.entry(key_id.to_string()).or_default();
        if !ids.iter().any(|r| r == id) {
            ids.push(id.to_string());
        }
    }
}

impl Index {
    pub fn new(ca_key_id: String) -> Index {
        Index {
            ca_key_id,
            ..Default::default()
        }
    }

    /// The index as JSON, byte for byte what `serde_json::to_vec` writes. At 100,000
    /// certificates that takes 100–130 ms on one core, so a large map of certificates is
    /// rendered in pieces on all cores and spliced in (the map is taken out meanwhile and put
    /// back).
    pub fn to_json(&mut self) -> serde_json::Result<Vec<u8>> {
        if self.certs.stored_len() < 2 * CERTS_PER_PIECE {
            // Sized up front (an entry is about 330 bytes): growing by doubling copies it.
            let mut out = Vec::with_capacity(4096 + 400 * self.certs.stored_len());
            serde_json::to_writer(&mut out, self)?;
            return Ok(out);
        }
        let certs = std::mem::take(&mut self.certs);
        let json = self.to_json_around(&certs.stored());
        self.certs = certs;
        json
    }

    /// Whether the certificates the index object stores itself should go to a new base before
    /// it is written (see [`BASE_MIN`]).
    pub fn wants_base(&self) -> bool {
        let n = self.certs.stored_len();
        n >= BASE_MIN && n > self.certs.len() / 8
    }

    /// The base object of this index: every certificate, and the CA key they belong to.
    pub fn base_json(&self) -> serde_json::Result<Vec<u8>> {
        let entries: Vec<(&String, &CertSummary)> = self.certs.iter().collect();
        Index::new(self.ca_key_id.clone()).to_json_around(&entries)
    }

    /// Once its base is stored under `key`: the index object stores no certificate itself
    /// until one changes.
    pub fn rebased(&mut self, key: String) {
        self.base = Some(key);
        self.certs.own = Some(BTreeSet::new());
    }

    /// Puts the certificates of `base` (read from [`Index::base`]) under this index's own.
    pub fn merge_base(&mut self, base: Index) -> Result<(), String> {
        if base.ca_key_id != self.ca_key_id {
            return Err(format!(
                "the base belongs to CA key {}, the index to {}",
                base.ca_key_id, self.ca_key_id
            ));
        }
        if let Some(other) = &base.base {
            return Err(format!("a base cannot name a base itself ({other})"));
        }
        let own = std::mem::replace(&mut self.certs.map, base.certs.map);
        self.certs.own = Some(own.keys().cloned().collect());
        self.certs.map.extend(own);
        Ok(())
    }

    /// This index (its certificates taken out) as JSON, with `entries` as its certificates,
    /// rendered in pieces on all cores and spliced in where its empty map was written.
    fn to_json_around(&self, entries: &[(&String, &CertSummary)]) -> serde_json::Result<Vec<u8>> {
        use serde::ser::Error;
        // Certificates are the third field: no string before them can hold this unescaped.
        const EMPTY: &[u8] = b"\"certs\":{}";
        let rest = serde_json::to_vec(self)?;
        let at = rest
            .windows(EMPTY.len())
            .position(|w| w == EMPTY)
            .ok_or_else(|| serde_json::Error::custom("the certificates' key is not written"))?
            + EMPTY.len()
            - 1;
        // Sized up front (an entry is about 330 bytes): growing 33 MB by doubling copies it.
        let mut out = Vec::with_capacity(rest.len() + 400 * entries.len());
        out.extend_from_slice(&rest[..at]);
        struct Entries<'a>(&'a [(&'a String, &'a CertSummary)]);
        impl Serialize for Entries<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().copied())
            }
        }
        splice_in_pieces(&mut out, entries, CERTS_PER_PIECE, |piece| {
            let mut out = Vec::with_capacity(400 * piece.len());
            serde_json::to_writer(&mut out, &Entries(piece))?;
            Ok(out)
        })?;
        out.extend_from_slice(&rest[at..]);
        Ok(out)
    }

    /// The current certificate of every request that has one (see [`ByRequest::current`]).
    pub fn current_all(&self) -> HashMap<&str, (&String, &CertSummary)> {
        ByRequest::new(self)
            .groups()
            .filter_map(|mine| {
                let current = ByRequest::current(mine)?;
                Some((current.1.request_id.as_str(), current))
            })
            .collect()
    }

    /// Serials that belong on the CRL at `now`: revoked and not expired for more than one
    /// CRL lifetime (an entry stays on one CRL issued after the certificate expired).
    pub fn crl_serials(&self, now: OffsetDateTime, crl_lifetime: time::Duration) -> Vec<String> {
        let mut out: Vec<String> = self
            .certs
            .iter()
            .filter(|(_, c)| c.revoked.is_some() && c.not_after + crl_lifetime > now)
            .map(|(s, _)| s.clone())
            .chain(
                self.previous_ca
                    .iter()
                    .filter(|(_, p)| p.keep_until + crl_lifetime > now)
                    .map(|(s, _)| s.clone()),
            )
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// How a serial on the CRL was revoked (gitca's own certificates first).
    pub fn revocation_of(&self, serial: &str) -> Option<&Revoked> {
        match self.certs.get(serial) {
            Some(c) => c.revoked.as_ref(),
            None => self.previous_ca.get(serial).map(|p| &p.revoked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::revocation::Reason;
    use time::macros::datetime;

    /// An entry that is not revoked is written without `revoked`; one that is keeps it; both,
    /// and an entry as older versions wrote it (`"revoked": null`), read back the same.
    #[test]
    fn revoked_is_written_only_when_revoked() {
        let t = datetime!(2026-01-01 0:00 UTC);
        for revoked in [false, true] {
            let c = cert(t, revoked);
            let json = serde_json::to_value(&c).unwrap();
            assert_eq!(json.get("revoked").is_some(), revoked, "{json}");
            assert_eq!(serde_json::from_value::<CertSummary>(json).unwrap(), c);
        }
        let mut older = serde_json::to_value(cert(t, false)).unwrap();
        older["revoked"] = serde_json::Value::Null;
        assert_eq!(
            serde_json::from_value::<CertSummary>(older).unwrap(),
            cert(t, false)
        );
    }

    /// A round's records are written in parts joined into one array: the bytes are serde_json's
    /// for the whole array, whatever the number of parts, and read back as written.
    #[test]
    fn records_in_parts_are_the_json_array_serde_writes() {
        let rec = |i: usize| CertRecord {
            serial: format!("{i:040x}"),
            request_id: format!("requests/r-{i}.yaml"),
            request_hash: "h\"quoted\"".into(),
            key_id: "k".into(),
            tbs: "dGJz".repeat(i % 7),
            certificate: i.is_multiple_of(3).then(|| format!("c{i}")),
        };
        let mut out = b"left from before".to_vec();
        for n in [0, 1, 2, 127, 128, 129, 1000] {
            let recs: Vec<CertRecord> = (0..n).map(rec).collect();
            let refs: Vec<&CertRecord> = recs.iter().collect();
            records_json_into(&mut out, &refs).unwrap();
            assert_eq!(out, serde_json::to_vec(&refs).unwrap(), "{n} records");
            assert_eq!(records_of(&out).unwrap(), recs, "{n} records");
        }
    }

    fn cert(not_after: OffsetDateTime, revoked: bool) -> CertSummary {
        CertSummary {
            request_id: "requests/a.yaml".into(),
            request_hash: "h".into(),
            key_id: "k".into(),
            not_before: not_after - time::Duration::days(30),
            not_after,
            revoked: revoked.then(|| Revoked {
                reason: Reason::KeyCompromise,
                date: not_after - time::Duration::days(10),
                by: "serial:01".into(),
            }),
            round: None,
        }
    }

    #[test]
    fn crl_keeps_an_entry_one_crl_past_expiry_then_prunes_it() {
        let now = datetime!(2026-11-28 00:00 UTC);
        let week = time::Duration::days(7);
        let mut i = Index::new("ca".into());
        i.certs
            .insert("01".into(), cert(now + time::Duration::days(3), true));
        i.certs
            .insert("02".into(), cert(now - time::Duration::days(2), true));
        i.certs
            .insert("03".into(), cert(now - time::Duration::days(8), true));
        i.certs
            .insert("04".into(), cert(now + time::Duration::days(3), false));
        assert_eq!(i.crl_serials(now, week), vec!["01", "02"]);
    }

    #[test]
    fn an_intent_object_holds_a_round_or_one_older_single_intent() {
        let rec = |serial: &str| CertRecord {
            serial: serial.into(),
            request_id: "requests/a.yaml".into(),
            request_hash: "h".into(),
            key_id: "k".into(),
            tbs: "MAA=".into(),
            certificate: None,
        };
        let round = vec![rec("0a"), rec("0b")];
        let bytes = serde_json::to_vec(&round).unwrap();
        assert_eq!(intents_of(&bytes).unwrap(), round);
        let single = serde_json::to_vec(&rec("0c")).unwrap();
        assert_eq!(intents_of(&single).unwrap(), vec![rec("0c")]);
        assert!(intents_of(b" [{\"serial\": 1}]").is_err());
        assert!(intents_of(b"").is_err());
    }

    /// The records' base64 and hex are what base64ct and hex write (and `recover` reads back
    /// with base64ct): the standard alphabet, padded, and lower-case hex (serials, key ids and
    /// request hashes, written with base16ct).
    #[test]
    fn fast_base64_and_hex_write_what_base64ct_and_hex_do() {
        use base64ct::{Base64, Encoding};
        // Every tail length, then the sizes of certificates and of chains.
        for len in (0..700).chain([1000, 1500, 2047, 2048, 2049]) {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 151 + len * 7) as u8).collect();
            let b64 = der_base64(&bytes);
            assert_eq!(b64, Base64::encode_string(&bytes), "{len} bytes");
            assert_eq!(Base64::decode_vec(&b64).unwrap(), bytes);
            assert_eq!(base16ct::lower::encode_string(&bytes), hex::encode(&bytes));
        }
    }

    /// The sized writer writes what `serde_json::to_vec` does, and sizes its buffer for it:
    /// intents and signed records both.
    #[test]
    fn records_json_is_serde_json_in_a_reused_buffer_sized_for_it() {
        let rec = |serial: &str, certificate: Option<&str>| CertRecord {
            serial: serial.into(),
            request_id: "requests/team-a/web.yaml".into(),
            request_hash: "9f".repeat(32),
            key_id: "ab".repeat(20),
            tbs: "MIIB".repeat(100),
            certificate: certificate.map(String::from),
        };
        let intents = [rec("0a", None), rec("0b", None)];
        let signed = [
            rec("0a", Some(&"MIIC".repeat(150))),
            rec("0b", Some("MAA=")),
        ];
        for recs in [&intents, &signed] {
            let refs: Vec<&CertRecord> = recs.iter().collect();
            // A reused buffer holds this round's array only.
            let mut json = b"[{\"left\":\"from the round before\"}]".repeat(50);
            records_json_into(&mut json, &refs).unwrap();
            assert_eq!(json, serde_json::to_vec(&refs).unwrap());
            assert_eq!(intents_of(&json).unwrap(), *recs);
            let hint: usize = 2 + refs.iter().map(|r| r.json_len_hint()).sum::<usize>();
            assert!(json.len() <= hint, "{} bytes, {hint} reserved", json.len());
            assert!(
                hint - json.len() <= 64 * refs.len(),
                "{hint} reserved for {}",
                json.len()
            );
        }
    }

    /// Read in bulk, the certificates map is the one inserting entry by entry gives, a repeated
    /// serial included (the last wins).
    #[test]
    fn maps_read_in_bulk_equal_maps_read_entry_by_entry() {
        let sorted = vec![("a", 1), ("b", 2), ("c", 3)];
        let repeated = vec![("b", 1), ("a", 2), ("b", 3)];
        for pairs in [sorted, repeated] {
            let one_by_one: BTreeMap<_, _> =
                pairs
                    .iter()
                    .copied()
                    .fold(BTreeMap::new(), |mut m, (k, v)| {
                        m.insert(k, v);
                        m
                    });
            assert_eq!(map_from_pairs(pairs), one_by_one);
        }
        let json = r#"{"ca_key_id":"k","certs":{"02":C,"01":C,"02":D}}"#
            .replace(
                "C",
                &serde_json::to_string(&cert(datetime!(2026-11-28 00:00 UTC), false)).unwrap(),
            )
            .replace(
                "D",
                &serde_json::to_string(&cert(datetime!(2026-12-28 00:00 UTC), true)).unwrap(),
            );
        let i: Index = serde_json::from_str(&json).unwrap();
        assert_eq!(i.certs.keys().collect::<Vec<_>>(), ["01", "02"]);
        assert!(i.certs["02"].revoked.is_some(), "the last 02 wins");
    }

    /// With a base, the index object stores only the certificates changed since (in pieces
    /// too when they are many, byte for byte serde's JSON), and reads back whole over its base.
    #[test]
    fn an_index_with_a_base_stores_what_changed_since() {
        let now = datetime!(2026-11-28 00:00 UTC);
        let mut i = Index::new("ca".into());
        for k in 0..40_000 {
            i.certs.insert(format!("{k:040x}"), cert(now, false));
        }
        assert!(i.wants_base());
        let base: Index = serde_json::from_slice(&i.base_json().unwrap()).unwrap();
        assert!(base.certs.iter().eq(i.certs.iter()) && base.base.is_none());
        i.rebased("index-base/b.json".into());
        assert!(!i.wants_base());
        let empty: Index = serde_json::from_slice(&i.to_json().unwrap()).unwrap();
        assert!(empty.certs.is_empty());
        assert_eq!(empty.base.as_deref(), Some("index-base/b.json"));
        // Inserted or changed through get_mut: stored; read only: not.
        i.certs.insert("ff".into(), cert(now, true));
        i.certs.get_mut(&format!("{:040x}", 7)).unwrap().request_id = "requests/b.yaml".into();
        assert!(i.certs.get(&format!("{:040x}", 8)).is_some());
        assert!(i.certs.get_mut("absent").is_none());
        let json = i.to_json().unwrap();
        let mut own: Index = serde_json::from_slice(&json).unwrap();
        let serials: Vec<&String> = own.certs.keys().collect();
        assert_eq!(serials, [&format!("{:040x}", 7), "ff"]);
        own.merge_base(base.clone()).unwrap();
        assert!(own.certs.iter().eq(i.certs.iter()), "read back whole");
        assert_eq!(own.certs.stored_len(), 2);
        // Many changed since the base: written in pieces, as serde writes them.
        for k in (0..40_000).step_by(2) {
            i.certs.get_mut(&format!("{k:040x}")).unwrap().key_id = "k2".into();
        }
        assert_eq!(i.certs.stored_len(), 20_002);
        assert!(i.wants_base());
        let expected = serde_json::to_vec(&i).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        assert!(pool.install(|| i.to_json()).unwrap() == expected);
        // A base of another CA key is refused.
        let mut other = Index::new("other".into());
        assert!(other.merge_base(base).is_err());
    }

    /// Rendered in pieces, the index is the JSON serde writes, byte for byte: below, at and
    /// above the size where it is split, with every other field set.
    #[test]
    fn an_index_rendered_in_pieces_is_the_json_serde_writes() {
        let now = datetime!(2026-11-28 00:00 UTC);
        for n in [0, 1, 16_383, 16_384, 16_385, 40_000] {
            let mut i = Index::new("ca".into());
            i.last_reconciled = Some("abc".into());
            i.crl_number = 7;
            i.published_crl_number = 6;
            i.events_checked_at = Some(now);
            i.crl = Some(CrlInfo {
                number: 7,
                this_update: now,
                next_update: now + time::Duration::days(7),
                serials: vec!["00ff".into()],
            });
            i.revocations.insert(
                "revocations/a.yaml#0".into(),
                PublishedRevocation {
                    reason: Reason::KeyCompromise,
                    written_date: None,
                    file: "revocations/a.yaml".into(),
                    serials: vec!["00ff".into()],
                },
            );
            i.previous_ca.insert(
                "0a".into(),
                PreviousCaRevocation {
                    revoked: cert(now, true).revoked.unwrap(),
                    keep_until: now,
                },
            );
            for k in 0..n {
                let mut c = cert(now + time::Duration::seconds(k as i64), k % 7 == 0);
                c.request_id = format!("requests/r{k}.yaml");
                i.certs.insert(format!("{k:040x}"), c);
            }
            let expected = serde_json::to_vec(&i).unwrap();
            let before = i.clone();
            // Two threads, so that 40,000 certificates take three batches on any machine.
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            let json = pool.install(|| i.to_json()).unwrap();
            assert!(json == expected, "{n} certificates");
            assert_eq!(i, before, "the certificates are put back");
        }
    }

    /// Built for a few requests, the certificates by request are those of the full map.
    #[test]
    fn certificates_of_a_few_requests_are_those_of_all() {
        let now = datetime!(2026-11-28 00:00 UTC);
        let mut i = Index::new("ca".into());
        for k in 0..50u32 {
            let mut c = cert(now + time::Duration::days(i64::from(k)), k % 3 == 0);
            c.request_id = format!("requests/r{}.yaml", k % 10);
            i.certs.insert(format!("{k:02x}"), c);
        }
        let ids: BTreeSet<String> = ["requests/r3.yaml", "requests/r7.yaml", "requests/none.yaml"]
            .into_iter()
            .map(String::from)
            .collect();
        let (all, few) = (ByRequest::new(&i), ByRequest::of_requests(&i, &ids));
        for id in &ids {
            let serials = |v: &[(&String, &CertSummary)]| {
                let mut s: Vec<String> = v.iter().map(|(s, _)| (*s).clone()).collect();
                s.sort();
                s
            };
            assert_eq!(serials(few.of(id)), serials(all.of(id)), "{id}");
            assert_eq!(
                ByRequest::current(few.of(id)),
                ByRequest::current(all.of(id))
            );
        }
        assert!(
            few.of("requests/r1.yaml").is_empty(),
            "only the requests asked for"
        );
        assert_eq!(few.groups().count(), 2);
    }

    #[test]
    fn current_certificate_is_the_newest_unrevoked() {
        let now = datetime!(2026-11-28 00:00 UTC);
        let mut i = Index::new("ca".into());
        i.certs
            .insert("0a".into(), cert(now + time::Duration::days(3), false));
        i.certs
            .insert("0b".into(), cert(now + time::Duration::days(20), false));
        i.certs
            .insert("0c".into(), cert(now + time::Duration::days(40), true));
        let current = i.current_all();
        assert_eq!(current["requests/a.yaml"].0, "0b");
        assert!(!current.contains_key("requests/b.yaml"));
    }
}
