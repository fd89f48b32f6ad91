//! The plan: a pure function of (committed tree, issued state, policies, now).

use super::config::{Config, ServerlessMode};
use super::csr::{CheckedCsr, KeyKind, check_csr};
use super::duration::Span;
use super::finding::{Code, Finding};
use super::incremental::Carried;
use super::names::{Sans, join_relative};
use super::policy::{self, Candidate, Policy};
use super::request::{MAX_REQUEST_BYTES, RequestFile, usage_oid};
use super::revocation::{self, Entry, Reason, Target};
use super::serverless_layout::{self, Csr, Layout, LayoutRequest};
use super::state::{ByRequest, CertSummary, Index, LiveKeys, PublishedRevocation};
use const_oid::ObjectIdentifier;
use serde::Serialize;
use sha2::{Digest, Sha256};
use spki::SubjectPublicKeyInfoOwned;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use time::OffsetDateTime;
use x509_cert::name::Name;

/// A file of the committed tree, as the git adapter found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEntry {
    Blob(Vec<u8>),
    Symlink,
    Submodule,
    TooLarge(u64),
}

/// The desired state: what the reviewed commit holds under the CA directory.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub commit: String,
    pub commit_time: OffsetDateTime,
    /// Every file under the CA directory (paths relative to it), except outputs; in an
    /// incremental reconcile, without the request files of `carried`.
    pub files: BTreeMap<String, TreeEntry>,
    /// Requests whose outcome the last reconcile fixed and nothing since has changed
    /// (see `incremental`): planned from the state, their files not read.
    pub carried: BTreeMap<String, Carried>,
    /// Files and folders whose names are not UTF-8, shown with their odd bytes replaced: not
    /// read, as no path could name them, and refused where the plan lists files
    /// ([`unnamed_input`]).
    pub unnamed: Vec<String>,
}

/// The folders whose files gitca finds by listing them (requests, policies, revocations): there,
/// a name that is not UTF-8 could hide an input, as it could under `certs/` in a serverless
/// layout. Anywhere else no input can have such a name: gitca reads only the files its
/// configuration and requests name, and those names are UTF-8.
const LISTED: [&str; 3] = ["requests/", "policies/", "revocations/"];

/// A file or folder of the snapshot that the plan would list but cannot name, if any.
pub fn unnamed_input<'a>(snapshot: &'a Snapshot, config: &Config) -> Option<&'a str> {
    let listed = |path: &str| {
        LISTED.iter().any(|folder| path.starts_with(folder))
            || (config.serverless.is_some() && path.starts_with("certs/"))
    };
    (snapshot.unnamed.iter())
        .find(|path| listed(path))
        .map(String::as_str)
}

/// The error for a path whose name is not UTF-8, shown with its odd bytes replaced.
pub fn not_utf8(shown: &str) -> String {
    format!(
        "{shown}: a name that is not UTF-8 (shown here with its odd bytes replaced); gitca \
         names every path in UTF-8: rename or remove it"
    )
}

/// What the plan needs to know about the issuing CA.
#[derive(Debug, Clone)]
pub struct CaFacts {
    pub key_id: String,
    pub not_after: OffsetDateTime,
}

/// Everything the profile needs to issue one certificate.
#[derive(Debug, Clone)]
pub struct IssueSpec {
    pub request_id: String,
    pub request_hash: String,
    pub key_id: String,
    pub public_key: SubjectPublicKeyInfoOwned,
    pub key: KeyKind,
    pub subject: Name,
    pub sans: Sans,
    pub usages: Vec<ObjectIdentifier>,
    pub lifetime: Span,
    pub extensions: Vec<x509_cert::ext::Extension>,
    pub policy: String,
    pub revoke_superseded: bool,
    /// Where the CSR was read (recorded for the next incremental reconcile).
    pub csr_path: String,
    /// When the certificate starts (see [`issue_start`]).
    pub not_before: OffsetDateTime,
}

/// When a new certificate of a request starts: `backdate` before `now`, or a second after the
/// start of the request's newest certificate (`newest`) if that started as late, but never
/// after `now`. Certificates carry whole seconds, and of a request's certificates the one that
/// started last is the one it is served (`ByRequest::current`): two started in the same second
/// were told apart by their random serials. A newest certificate dated ahead of `now` (a clock
/// set back) is not followed into the future.
pub fn issue_start(
    now: OffsetDateTime,
    backdate: time::Duration,
    newest: Option<OffsetDateTime>,
) -> OffsetDateTime {
    let wanted = now - backdate;
    match newest.map(|start| start + time::Duration::SECOND) {
        Some(after) if after > wanted => after.min(now),
        _ => wanted,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Issue,
    Reissue,
    Renew,
    Unchanged,
    Rejected,
    /// Revoked by a revocation entry naming the request: no new certificate.
    Revoked,
}

impl Action {
    /// Whether the action signs a new certificate.
    pub fn issues(self) -> bool {
        matches!(self, Action::Issue | Action::Reissue | Action::Renew)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestPlan {
    pub id: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The current certificate's serial, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub not_after: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// Not rejections: what `serverless.mode: compatible` changed from the entry as written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Finding>,
    /// Rejected now, but a live certificate issued under an earlier policy or request exists:
    /// it stays valid until it expires or is revoked; the reviewer should know.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub live_certificate_no_longer_allowed: bool,
    /// Live certificates of this request revoked as superseded (`revoke_superseded: true`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub supersede: Vec<String>,
    /// Boxed: most requests of a large plan have none, and inline it tripled the size of every
    /// entry (a full scan of 100,000 requests holds them all).
    #[serde(skip)]
    pub spec: Option<Box<IssueSpec>>,
    /// What the next incremental reconcile may carry (request files only).
    #[serde(skip)]
    pub carry: Option<Carried>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationAction {
    Revoke,
    AlreadyRevoked,
    Rejected,
    /// A `revoked.json` serial gitca did not issue: the serverless CA's CRL keeps listing it
    /// (unless `serverless.revoke_previous_serials`).
    PreviousCa,
    /// A plan without the state (`plan --no-state`) cannot tell whether the serial or request
    /// was issued: apply checks it. Not a rejection, so a pull request revoking a compromised
    /// certificate is not blocked by its plan.
    Unchecked,
}

#[derive(Debug, Clone, Serialize)]
pub struct RevocationPlan {
    pub file: String,
    pub index: usize,
    pub entry: String,
    pub action: RevocationAction,
    /// Serials this entry revokes now.
    pub serials: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub date: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// The serials were issued by the previous (serverless) CA with this CA's key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub previous_ca: bool,
    #[serde(skip)]
    pub parsed: Option<Entry>,
}

impl RequestPlan {
    /// A request with this outcome and nothing else known yet.
    pub fn new(id: String, action: Action) -> RequestPlan {
        RequestPlan {
            id,
            action,
            policy: None,
            serial: None,
            not_after: None,
            findings: vec![],
            warnings: vec![],
            live_certificate_no_longer_allowed: false,
            supersede: vec![],
            spec: None,
            carry: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Orphan {
    pub request_id: String,
    pub serials: Vec<String>,
    /// True when `orphans.revoke` is set: the serials are revoked (cessation of operation).
    pub revoke: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub commit: String,
    pub requests: Vec<RequestPlan>,
    pub revocations: Vec<RevocationPlan>,
    pub orphans: Vec<Orphan>,
    /// Why a new CRL is due, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crl_due: Option<String>,
    /// Serials the next CRL lists.
    #[serde(skip)]
    pub crl_serials: Vec<String>,
    /// About the repository rather than one request (e.g. what gitca does not carry over).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Finding>,
}

/// A problem that stops the whole run (not one request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub String);

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Inputs<'a> {
    pub snapshot: &'a Snapshot,
    pub config: &'a Config,
    pub policies: &'a [Policy],
    pub index: &'a Index,
    pub ca: &'a CaFacts,
    pub now: OffsetDateTime,
    /// Planned without the state (`plan --no-state`): what only the state can tell (issued
    /// serials, key reuse against issued certificates) is not known.
    pub no_state: bool,
}

impl Plan {
    pub fn has_rejections(&self) -> bool {
        self.requests.iter().any(|r| r.action == Action::Rejected)
            || self
                .revocations
                .iter()
                .any(|r| r.action == RevocationAction::Rejected)
    }

    /// Anything to sign, revoke or publish.
    pub fn has_changes(&self) -> bool {
        self.to_issue().next().is_some()
            || (self.revocations.iter()).any(|r| {
                matches!(
                    r.action,
                    RevocationAction::Revoke | RevocationAction::Unchecked
                )
            })
            || self.orphans.iter().any(|o| o.revoke)
            || self.requests.iter().any(|r| !r.supersede.is_empty())
            || self.crl_due.is_some()
    }

    /// The requests of the planned commit, in id order.
    pub fn request_ids(&self) -> BTreeSet<&str> {
        self.requests.iter().map(|r| r.id.as_str()).collect()
    }

    /// The requests of the planned commit, to look up (no ordering to build: 100,000 ids
    /// sorted into a set took 40 ms of a 10-changed run).
    pub fn request_set(&self) -> foldhash::HashSet<&str> {
        self.requests.iter().map(|r| r.id.as_str()).collect()
    }

    /// Whether a present request shares outputs with one of `deleted`: the same stem, or a
    /// certificate that is the other's chain file (see [`output_stem`]).
    pub fn shares_outputs_with(&self, deleted: &BTreeSet<String>) -> bool {
        if deleted.is_empty() {
            return false;
        }
        let gone: foldhash::HashSet<&str> = deleted.iter().map(|id| output_stem(id)).collect();
        let chain_of_gone: foldhash::HashSet<&str> = (gone.iter())
            .filter_map(|stem| stem.strip_suffix(".chain"))
            .collect();
        self.requests.iter().any(|r| {
            let stem = output_stem(&r.id);
            gone.contains(stem)
                || chain_of_gone.contains(stem)
                || stem
                    .strip_suffix(".chain")
                    .is_some_and(|s| gone.contains(s))
        })
    }

    /// Requests rejected because their outputs collide with another's (`output-path-conflict`):
    /// their certificates are not written, so the other's stay, and their committed files are
    /// kept as they are.
    pub fn withheld_outputs(&self) -> foldhash::HashSet<&str> {
        (self.requests.iter())
            .filter(|r| (r.findings.iter()).any(|f| f.code == Code::OutputPathConflict))
            .map(|r| r.id.as_str())
            .collect()
    }

    /// Which of `ids` are requests of the planned commit: the few an incremental run touched,
    /// found by binary search in the id-ordered requests (checking the order is one pass of
    /// comparisons) instead of a hash set of all of them.
    pub fn present_among<'a>(&'a self, ids: &'a BTreeSet<String>) -> foldhash::HashSet<&'a str> {
        let sorted = self.requests.windows(2).all(|w| w[0].id < w[1].id);
        if !sorted {
            let all = self.request_set();
            return ids
                .iter()
                .map(String::as_str)
                .filter(|id| all.contains(id))
                .collect();
        }
        ids.iter()
            .map(String::as_str)
            .filter(|id| {
                self.requests
                    .binary_search_by(|r| r.id.as_str().cmp(id))
                    .is_ok()
            })
            .collect()
    }

    pub fn to_issue(&self) -> impl Iterator<Item = &RequestPlan> {
        self.requests.iter().filter(|r| r.action.issues())
    }

    /// The positions in `requests` of what `to_issue` yields.
    pub fn to_issue_indices(&self) -> impl Iterator<Item = usize> + '_ {
        (self.requests.iter().enumerate())
            .filter(|(_, r)| r.action.issues())
            .map(|(i, _)| i)
    }

    /// terraform-style detailed exit code: 0 nothing to do, 2 changes pending, 3 rejections.
    pub fn exit_code(&self) -> i32 {
        if self.has_rejections() {
            3
        } else if self.has_changes() {
            2
        } else {
            0
        }
    }
}

pub fn is_request_file(path: &str) -> bool {
    path.starts_with("requests/") && (path.ends_with(".yaml") || path.ends_with(".yml"))
}

/// Every request id of the snapshot: request files, and tls.json entries when the serverless
/// layout is read in place.
pub fn request_ids(snapshot: &Snapshot, config: &Config) -> Result<BTreeSet<String>, String> {
    let layout = layout_of(snapshot, config)?;
    Ok(request_sources(snapshot, &layout)
        .into_iter()
        .map(|(id, _)| id.clone())
        .collect())
}

/// The serverless layout when `gitca.yaml` asks for it.
fn layout_of(snapshot: &Snapshot, config: &Config) -> Result<Layout, String> {
    match &config.serverless {
        Some(c) => serverless_layout::read(snapshot, c),
        None => Ok(Layout::default()),
    }
}

/// The request hash of every request that can be read from the snapshot, by id: what a
/// certificate issued from the commit as it is would record.
/// Every request id of the commit with its hash, or why it cannot be read (its YAML does not
/// parse, its CSR is missing: the plan rejects it).
pub fn request_hashes(
    snapshot: &Snapshot,
    config: &Config,
) -> Result<BTreeMap<String, Result<String, String>>, String> {
    let layout = layout_of(snapshot, config)?;
    Ok(request_sources(snapshot, &layout)
        .iter()
        .filter(|(_, source)| !matches!(source, Source::Carried(_)))
        .map(|(id, source)| {
            let hash = match read_source(snapshot, id, source) {
                Ok((_, yaml, _, csr)) => Ok(request_hash(&yaml, csr)),
                Err(findings) => Err((findings.iter())
                    .map(|f| f.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")),
            };
            ((*id).clone(), hash)
        })
        .collect())
}

pub fn is_revocation_file(path: &str) -> bool {
    path == "revocations.yaml"
        || (path.starts_with("revocations/") && (path.ends_with(".yaml") || path.ends_with(".yml")))
}

/// Whether a planned revocation lists a certificate revoked already: it raises its reason.
fn raises_a_reason(revocations: &[RevocationPlan], index: &Index) -> bool {
    (revocations.iter())
        .filter(|r| r.action == RevocationAction::Revoke)
        .flat_map(|r| &r.serials)
        .any(|s| index.certs.get(s).is_some_and(|c| c.revoked.is_some()))
}

/// A revocation entry (or file) rejected as invalid: `entry` names it, `message` says why.
fn rejected_revocation(path: &str, index: usize, entry: String, message: String) -> RevocationPlan {
    RevocationPlan {
        file: path.to_string(),
        index,
        entry,
        action: RevocationAction::Rejected,
        serials: vec![],
        reason: None,
        date: None,
        findings: vec![Finding::new(Code::RevocationInvalid, path, message)],
        previous_ca: false,
        parsed: None,
    }
}

/// A file named as if it held revocations that gitca does not read (`revocations.yml`,
/// `revocations/x.YAML`): its entries would never be applied, without a word.
pub fn is_misnamed_revocation_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let looks = lower == "revocations.yaml"
        || lower == "revocations.yml"
        || (lower.starts_with("revocations/")
            && (lower.ends_with(".yaml") || lower.ends_with(".yml")));
    looks && !is_revocation_file(path)
}

pub fn request_hash(yaml: &[u8], csr: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update((yaml.len() as u64).to_be_bytes());
    h.update(yaml);
    h.update(csr);
    base16ct::lower::encode_string(&h.finalize())
}

pub fn plan(i: &Inputs) -> Result<Plan, PlanError> {
    if let Some(path) = unnamed_input(i.snapshot, i.config) {
        return Err(PlanError(not_utf8(path)));
    }
    let layout = layout_of(i.snapshot, i.config).map_err(PlanError)?;
    let (mut revocations, blocked_requests) = plan_revocations(i, &layout)?;
    // Rejected like a bad entry, not an error: the CRL goes on being refreshed meanwhile.
    for path in (i.snapshot.files.keys()).filter(|p| is_misnamed_revocation_file(p)) {
        revocations.push(rejected_revocation(
            path,
            0,
            path.clone(),
            "not read as revocations (gitca reads revocations.yaml and revocations/*.yaml or \
             *.yml): rename it, or its entries are never applied"
                .to_string(),
        ));
    }
    revocations.sort_by(|a, b| (&a.file, a.index).cmp(&(&b.file, b.index)));
    let mut requests = plan_requests(i, &layout, &blocked_requests, &revocations);
    reject_output_collisions(&mut requests, i.now);
    // Looked up once per issued certificate: a hash set, not a tree of 100,000 ids.
    let present: foldhash::HashSet<&str> = requests.iter().map(|r| r.id.as_str()).collect();

    let mut orphan_map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (serial, c) in &i.index.certs {
        if c.is_live(i.now) && !present.contains(c.request_id.as_str()) {
            orphan_map
                .entry(c.request_id.clone())
                .or_default()
                .push(serial.clone());
        }
    }
    let orphans: Vec<Orphan> = orphan_map
        .into_iter()
        .map(|(request_id, serials)| Orphan {
            request_id,
            serials,
            revoke: i.config.orphans.revoke,
        })
        .collect();

    // The CRL the state would call for once this plan is applied.
    let mut newly: BTreeSet<&str> = BTreeSet::new();
    for r in &revocations {
        if r.action == RevocationAction::Revoke {
            newly.extend(r.serials.iter().map(|s| s.as_str()));
        }
    }
    for o in orphans.iter().filter(|o| o.revoke) {
        newly.extend(o.serials.iter().map(|s| s.as_str()));
    }
    for r in &requests {
        newly.extend(r.supersede.iter().map(|s| s.as_str()));
    }
    let lifetime = i.config.crl.lifetime.as_time();
    let mut crl_serials: Vec<String> = i
        .index
        .certs
        .iter()
        .filter(|(s, c)| {
            (c.revoked.is_some() || newly.contains(s.as_str())) && c.not_after + lifetime > i.now
        })
        .map(|(s, _)| s.clone())
        .chain(
            i.index
                .previous_ca
                .iter()
                .filter(|(_, p)| p.keep_until + lifetime > i.now)
                .map(|(s, _)| s.clone()),
        )
        .chain(
            revocations
                .iter()
                .filter(|r| r.previous_ca && r.action == RevocationAction::Revoke)
                .flat_map(|r| r.serials.iter().cloned()),
        )
        .collect();
    crl_serials.sort();
    crl_serials.dedup();
    let crl_due = match &i.index.crl {
        None => Some("no CRL has been published yet".to_string()),
        Some(c) if c.serials != crl_serials => {
            Some("the set of revoked certificates changed".into())
        }
        Some(c) if c.next_update - i.config.crl.overlap.as_time() <= i.now => Some(format!(
            "nextUpdate {} is within the overlap window",
            c.next_update
        )),
        // As apply decides (`crl_due`, and a raised reason): the serials alone do not show these.
        Some(c) if i.index.crl_number > c.number => Some(format!(
            "CRL number {} was reserved and never signed",
            i.index.crl_number
        )),
        Some(_) if raises_a_reason(&revocations, i.index) => {
            Some("a revocation raises a certificate's reason to key compromise".into())
        }
        Some(_) => None,
    };

    Ok(Plan {
        commit: i.snapshot.commit.clone(),
        requests,
        revocations,
        orphans,
        crl_due,
        crl_serials,
        warnings: layout
            .warnings
            .into_iter()
            .chain(unread_folders(i.snapshot))
            .collect(),
    })
}

/// A symbolic link or submodule under `requests/` that is no request file: a folder of requests
/// gitca does not enter (it reads the commit's own blobs only), which would go unplanned
/// without a word.
fn unread_folders(snapshot: &Snapshot) -> impl Iterator<Item = Finding> + '_ {
    (snapshot.files.iter())
        .filter(|(path, _)| path.starts_with("requests/") && !is_request_file(path))
        .filter_map(|(path, entry)| {
            let what = match entry {
                TreeEntry::Symlink => "a symbolic link",
                TreeEntry::Submodule => "a submodule",
                _ => return None,
            };
            Some(Finding::new(
                Code::RequestNotRegularFile,
                path,
                format!(
                    "{what} under requests/: gitca reads only what the commit itself holds, \
                     not through it (a folder of requests linked here is not read)"
                ),
            ))
        })
}

fn plan_revocations(
    i: &Inputs,
    layout: &Layout,
) -> Result<(Vec<RevocationPlan>, BTreeSet<String>), PlanError> {
    let mut out = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    let rejected_entry = |path: &str, index: usize, msg: String| {
        rejected_revocation(
            path,
            index,
            format!("#{index}"),
            format!("entry {index}: {msg}"),
        )
    };
    for (path, r) in &layout.revocations {
        match r {
            Ok(e) => entries.push(e.clone()),
            Err((index, msg)) => out.push(rejected_entry(path, *index, msg.clone())),
        }
    }
    for (path, entry) in &i.snapshot.files {
        if !is_revocation_file(path) {
            continue;
        }
        let text = match entry {
            TreeEntry::Blob(b) => String::from_utf8_lossy(b).into_owned(),
            _ => {
                return Err(PlanError(format!(
                    "{path}: revocation files must be regular files in the commit"
                )));
            }
        };
        for r in revocation::parse_file(path, &text).map_err(PlanError)? {
            match r {
                Ok(e) => entries.push(e),
                Err((index, msg)) => out.push(rejected_entry(path, index, msg)),
            }
        }
    }

    let listed_twice = tell_entries_apart(&mut entries, &i.index.revocations);
    // Append-only: every published entry must still be there, unchanged.
    let by_key: BTreeMap<&str, &Entry> = (entries.iter().enumerate())
        .filter(|(n, _)| !listed_twice.contains(n))
        .map(|(_, e)| (e.key.as_str(), e))
        .collect();
    for (key, published) in &i.index.revocations {
        match by_key.get(key.as_str()) {
            None => {
                return Err(PlanError(format!(
                    "{}: the published revocation {key} was removed; revocations are append-only and a revoked certificate stays revoked",
                    published.file
                )));
            }
            Some(e) if !published_as(e, published) => {
                return Err(PlanError(format!(
                    "{}: the published revocation {key} was changed (reason or date); revocations are append-only",
                    e.file
                )));
            }
            Some(_) => {}
        }
    }

    // Built only when an entry names a serial: it reads every issued serial.
    let by_canonical: BTreeMap<String, &String> =
        if (entries.iter()).any(|e| matches!(e.target, Target::Serial(_))) {
            (i.index.certs.keys())
                .map(|k| (super::serial::canonical_hex(k), k))
                .collect()
        } else {
            BTreeMap::new()
        };
    // Built only when an entry says key compromise: every unexpired certificate of the key is
    // revoked, whichever request or serial the entry names.
    let mut by_key_id: HashMap<&str, Vec<(&String, &CertSummary)>> = HashMap::new();
    if (entries.iter()).any(|e| e.reason == Reason::KeyCompromise) {
        for (serial, c) in &i.index.certs {
            by_key_id
                .entry(c.key_id.as_str())
                .or_default()
                .push((serial, c));
        }
    }
    let mut blocked = BTreeSet::new();
    for (n, e) in entries.into_iter().enumerate() {
        let mut p = RevocationPlan {
            file: e.file.clone(),
            index: e.index,
            entry: e.key.clone(),
            action: RevocationAction::Revoke,
            serials: vec![],
            reason: Some(e.reason),
            // A commit dated ahead of this run's clock does not date a revocation ahead.
            date: Some(e.date.unwrap_or(i.snapshot.commit_time.min(i.now))),
            findings: vec![],
            previous_ca: false,
            parsed: None,
        };
        let reject = |p: &mut RevocationPlan, code, msg: String| {
            p.action = RevocationAction::Rejected;
            p.findings.push(Finding::new(
                code,
                e.file.clone(),
                format!("entry {}: {msg}", e.index),
            ));
        };
        if listed_twice.contains(&n) {
            reject(
                &mut p,
                Code::RevocationInvalid,
                format!("{} is listed twice", e.key),
            );
            out.push(p);
            continue;
        }
        // Verifiers take a certificate as revoked only from its revocation date on (Java's
        // among them): a date ahead would leave it valid until then. A CRL entry's date was
        // written as 1970 for any earlier one. An entry published so by an earlier gitca stays
        // as published: append-only, it could never be mended.
        let published_as_is =
            (i.index.revocations.get(&e.key)).is_some_and(|p| published_as(&e, p));
        let bad_date = e.date.filter(|_| !published_as_is).and_then(|d| {
            if d > i.now {
                Some(format!(
                    "date {d} is in the future; a revocation takes effect when it is made"
                ))
            } else if d.unix_timestamp() < 0 {
                Some(format!("date {d} is before 1970"))
            } else {
                None
            }
        });
        if let Some(why) = bad_date {
            reject(&mut p, Code::RevocationInvalid, why);
            out.push(p);
            continue;
        }
        match &e.target {
            Target::Serial(cands) => {
                // Index keys are full hex (a leading 0 nibble kept); entries are canonical.
                let found: Vec<&String> = cands
                    .iter()
                    .filter_map(|c| by_canonical.get(c.as_str()).copied())
                    .collect();
                let previous = i
                    .config
                    .serverless
                    .as_ref()
                    .filter(|_| serverless_layout::is_revoked_json(&e.file));
                match found.as_slice() {
                    [] if previous.is_some_and(|c| c.revoke_previous_serials) => {
                        p.previous_ca = true;
                        // Only readings a CRL can list (one of a decimal or hex reading may
                        // not fit in 20 bytes); none: refused here, not when the CRL is signed.
                        let mut why = None;
                        p.serials = (cands.iter())
                            .filter(|c| match super::crl::serial_number(c) {
                                Ok(_) => true,
                                Err(e) => {
                                    why.get_or_insert(e);
                                    false
                                }
                            })
                            .cloned()
                            .collect();
                        if p.serials.is_empty() {
                            let why = why.unwrap_or_else(|| "no serial".into());
                            reject(&mut p, Code::RevocationInvalid, why);
                        }
                    }
                    [] if previous.is_some() => {
                        p.previous_ca = true;
                        p.action = RevocationAction::PreviousCa;
                    }
                    [] if i.no_state => p.action = RevocationAction::Unchecked,
                    [] => reject(
                        &mut p,
                        Code::RevocationUnknownSerial,
                        format!("serial {} was not issued by this CA", cands.join(" or ")),
                    ),
                    [s] => p.serials.push((*s).clone()),
                    _ => reject(
                        &mut p,
                        Code::RevocationInvalid,
                        "the serial reads as two issued serials (decimal and hex); write it with colons or 0x".into(),
                    ),
                }
            }
            Target::Request(r) => {
                let serials: Vec<String> = i
                    .index
                    .certs
                    .iter()
                    .filter(|(_, c)| &c.request_id == r)
                    .map(|(s, _)| s.clone())
                    .collect();
                // Under `requests/`, a request file, not any file: an incremental snapshot
                // holds only the files there it read, so `requests/NOTES.md` would exist for a
                // full plan only. (Elsewhere it holds every file.)
                let in_requests = r.starts_with("requests/");
                let exists = ((!in_requests || is_request_file(r))
                    && (i.snapshot.files.contains_key(r) || i.snapshot.carried.contains_key(r)))
                    || layout.requests.iter().any(|l| &l.id == r);
                if serials.is_empty() && !exists {
                    match i.no_state {
                        // A removed request's certificates are known to the state only.
                        true => p.action = RevocationAction::Unchecked,
                        false => reject(
                            &mut p,
                            Code::RevocationUnknownRequest,
                            format!("request {r} has no certificate and no request file"),
                        ),
                    }
                } else {
                    blocked.insert(r.clone());
                    p.serials = serials;
                }
            }
        }
        if p.action == RevocationAction::Revoke {
            // Revoked already, a certificate is listed again only to raise its reason to key
            // compromise (it was superseded, say): the key must then never be certified again,
            // and the CRL must say why (an entry doing so was recorded and changed nothing).
            // By request, only certificates of the key the request holds now (its newest's):
            // one it held before was not said to be compromised. (Its live certificates are
            // revoked with the entry's reason whatever their key, as a request entry says.)
            let raises = e.reason == Reason::KeyCompromise;
            // A request's serials were all listed above: its newest is among them.
            let request_key = match &e.target {
                Target::Request(_) => (p.serials.iter())
                    .filter_map(|s| i.index.certs.get(s))
                    .max_by_key(|c| c.not_before)
                    .map(|c| c.key_id.as_str()),
                Target::Serial(_) => None,
            };
            if raises {
                // The compromised key: the request's now, or each named serial's.
                let keys: BTreeSet<&str> = match request_key {
                    Some(k) => [k].into(),
                    None => (p.serials.iter())
                        .filter_map(|s| i.index.certs.get(s))
                        .map(|c| c.key_id.as_str())
                        .collect(),
                };
                let listed: BTreeSet<String> = p.serials.iter().cloned().collect();
                let more = (keys.iter())
                    .flat_map(|k| by_key_id.get(k).into_iter().flatten())
                    .filter(|(s, c)| c.not_after > i.now && !listed.contains(s.as_str()));
                p.serials.extend(more.map(|(s, _)| s.to_string()));
                p.serials.sort();
            }
            let raisable = |was: Reason, key: &str| {
                raises && was != Reason::KeyCompromise && request_key.is_none_or(|k| k == key)
            };
            p.serials.retain(|s| match i.index.certs.get(s) {
                Some(c) => (c.revoked.as_ref()).is_none_or(|r| raisable(r.reason, &c.key_id)),
                None => p.previous_ca && !i.index.previous_ca.contains_key(s),
            });
            if p.serials.is_empty() && i.index.revocations.contains_key(&e.key) {
                p.action = RevocationAction::AlreadyRevoked;
            }
        }
        p.parsed = Some(e);
        out.push(p);
    }
    out.sort_by(|a, b| (&a.file, a.index).cmp(&(&b.file, b.index)));
    Ok((out, blocked))
}

/// Whether `e` reads as the entry `published` records: append-only, it must.
/// The entry reads as it was published: same reason, same written date.
pub fn published_as(e: &Entry, published: &PublishedRevocation) -> bool {
    e.reason == published.reason && e.date == published.written_date
}

/// Entries naming the same target (a serial, a request): the one published under its key
/// (else the first listed) keeps the key. A later `key_compromise` entry for a target
/// published with another reason raises it: it is an entry of its own, keyed
/// `<key> (key_compromise)`, published and append-only as any. Any other such entry is
/// listed twice: returned by position, to be rejected without stopping the run.
pub fn tell_entries_apart(
    entries: &mut [Entry],
    published: &BTreeMap<String, PublishedRevocation>,
) -> BTreeSet<usize> {
    let matches = |e: &Entry, key: &str| published.get(key).is_some_and(|p| published_as(e, p));
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (n, e) in entries.iter().enumerate() {
        by_key.entry(e.key.clone()).or_default().push(n);
    }
    let mut twice = BTreeSet::new();
    for (key, mut all) in by_key.into_iter().filter(|(_, all)| all.len() > 1) {
        let first = (all.iter().position(|&n| matches(&entries[n], &key))).unwrap_or(0);
        let kept = all.remove(first);
        let raise_key = format!("{key} (key_compromise)");
        if entries[kept].reason != Reason::KeyCompromise {
            let raises: Vec<usize> = (all.iter().copied())
                .filter(|&n| entries[n].reason == Reason::KeyCompromise)
                .collect();
            let chosen = (raises.iter().copied())
                .find(|&n| matches(&entries[n], &raise_key))
                .or(raises.first().copied());
            if let Some(n) = chosen {
                entries[n].key = raise_key;
                all.retain(|&m| m != n);
            }
        }
        twice.extend(all);
    }
    twice
}

/// Request files (read or carried) in id order, then the serverless layout's: the order of a
/// full scan, which the key-reuse decisions depend on.
fn request_sources<'a>(
    snapshot: &'a Snapshot,
    layout: &'a Layout,
) -> Vec<(&'a String, Source<'a>)> {
    let mut sources: Vec<(&String, Source)> = snapshot
        .files
        .iter()
        .filter(|(id, _)| is_request_file(id))
        .map(|(id, e)| (id, Source::File(e)))
        .chain(
            snapshot
                .carried
                .iter()
                .map(|(id, c)| (id, Source::Carried(c))),
        )
        .collect();
    sources.sort_by(|a, b| a.0.cmp(b.0));
    sources.extend(layout.requests.iter().map(|l| (&l.id, Source::Layout(l))));
    sources
}

/// The part of a request file's id its outputs are named after: `requests/servers/web-01.yaml`
/// -> `servers/web-01`, written as `<output dir>/servers/web-01.pem` and `.chain.pem`.
pub fn output_stem(request_id: &str) -> &str {
    let rel = request_id.strip_prefix("requests/").unwrap_or(request_id);
    rel.trim_end_matches(".yaml").trim_end_matches(".yml")
}

/// Rejects requests whose outputs would collide with another's: the same stem (`a.yaml` and
/// `a.yml` would write one `a.pem`), a certificate file that is another's chain file (`a.yaml`
/// and `a.chain.yaml` both write `a.chain.pem`), or a stem under another's certificate or chain
/// file (`a.yaml` and `a.pem/x.yaml`: git cannot hold a file and a folder at one path). Of a
/// pair, the one holding a live certificate keeps its plan and the other is rejected, naming
/// it; when both or neither hold one, both are. So a request added beside an issued one is
/// refused, and the issued one goes on being renewed. Decided from the plan and the index
/// alone, before anything is signed, the same in an incremental and a full plan.
fn reject_output_collisions(requests: &mut [RequestPlan], now: OffsetDateTime) {
    // Each stem's first request, and the further ones of a stem already taken (rare).
    let mut by_stem: foldhash::HashMap<&str, &str> = Default::default();
    by_stem.reserve(requests.len());
    let mut more: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in requests.iter() {
        let stem = output_stem(&r.id);
        match by_stem.entry(stem) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(&r.id);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                more.entry(stem).or_default().push(&r.id);
            }
        }
    }
    let ids_of = |stem: &str| {
        let first = by_stem.get(stem).copied();
        first
            .into_iter()
            .chain(more.get(stem).into_iter().flatten().copied())
    };
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    // The same stem: each request with every one before it.
    for (stem, later) in &more {
        for (i, &id) in later.iter().enumerate() {
            let before = ids_of(stem).take(i + 1);
            pairs.extend(before.map(|other| (id, other)));
        }
    }
    for r in requests.iter() {
        let stem = output_stem(&r.id);
        // Its certificate, `<stem>.pem`, is the chain file of `<stem without .chain>`.
        let chain_of = stem.strip_suffix(".chain");
        // Each folder named like a certificate or chain file could be another's output.
        let folders = (stem.match_indices(".pem/")).map(|(end, _)| &stem[..end + ".pem".len()]);
        let under = folders.flat_map(|f| [f.strip_suffix(".pem"), f.strip_suffix(".chain.pem")]);
        for other in std::iter::once(chain_of).chain(under).flatten() {
            pairs.extend(ids_of(other).map(|o| (r.id.as_str(), o)));
        }
    }
    if pairs.is_empty() {
        return;
    }
    let holds = |r: &RequestPlan| r.serial.is_some() && r.not_after.is_some_and(|t| t > now);
    let held: BTreeMap<&str, bool> = (requests.iter())
        .map(|r| (r.id.as_str(), holds(r)))
        .collect();
    let mut rejected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in pairs {
        let mut reject = |who: &str, because: &str| {
            (rejected.entry(who.to_string()).or_default()).insert(because.to_string());
        };
        match (held[a], held[b]) {
            (true, false) => reject(b, a),
            (false, true) => reject(a, b),
            _ => {
                reject(a, b);
                reject(b, a);
            }
        }
    }
    for r in requests.iter_mut() {
        let Some(others) = rejected.get(&r.id) else {
            continue;
        };
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        r.findings.push(Finding::new(
            Code::OutputPathConflict,
            r.id.clone(),
            format!(
                "its outputs ({stem}.pem and {stem}.chain.pem in the output folder) collide with \
                 those of {}: rename it",
                others.join(", "),
                stem = output_stem(&r.id)
            ),
        ));
        if r.action == Action::Revoked {
            continue;
        }
        r.live_certificate_no_longer_allowed = holds(r);
        r.action = Action::Rejected;
        r.spec = None;
        r.supersede.clear();
        // A request file is planned in full again next time, as every rejected one is.
        if r.carry.is_some() {
            r.carry = Some(Carried::default());
        }
    }
}

/// Where a request comes from: a request file, or an entry of the serverless layout.
enum Source<'a> {
    File(&'a TreeEntry),
    Layout(&'a LayoutRequest),
    /// Unchanged since the last reconcile, which accepted it (incremental).
    Carried(&'a Carried),
}

fn plan_requests<'a>(
    i: &Inputs<'a>,
    layout: &Layout,
    blocked: &BTreeSet<String>,
    revocations: &'a [RevocationPlan],
) -> Vec<RequestPlan> {
    let (mut certs, mut live_keys) = ByRequest::with_live_keys(i.index, i.now);
    // What this plan revokes counts already: no request is certified for a key it revokes for
    // key compromise, and a request whose newest certificate it revokes is shown as revoked.
    let revoking = (revocations.iter()).filter(|r| r.action == RevocationAction::Revoke);
    let compromised = (revoking.clone())
        .filter(|r| r.reason == Some(Reason::KeyCompromise))
        .flat_map(|r| &r.serials)
        .filter_map(|s| Some(i.index.certs.get(s)?.key_id.as_str()));
    certs.revoking(
        revoking.flat_map(|r| r.serials.iter().map(String::as_str)),
        compromised,
    );
    let sources = request_sources(i.snapshot, layout);
    // Reading and checking each CSR (its signature above all) is independent per request: all
    // cores. The decisions that follow depend on each other (key reuse), in id order. Prepared in
    // rounds, so a full scan of 100,000 requests does not hold 100,000 checked CSRs at once.
    // Carried requests depend on no other request either: they are planned in that step too.
    // A round is decided while the next is prepared (at most two rounds are held): the decisions
    // run on one thread, and the other cores waited for them (10-25 ms of a 10,000 issuance on
    // two cores).
    let rounds: Vec<&[(&String, Source)]> = sources.chunks(PREPARE_ROUND).collect();
    let mut out = Vec::with_capacity(sources.len());
    let mut prepared = (rounds.first()).map(|round| prepare_round(i, round, blocked, &certs));
    for (k, round) in rounds.iter().enumerate() {
        let steps = prepared
            .take()
            .expect("each round is prepared before it is decided");
        let decide = || {
            for (entry, step) in round.iter().zip(steps) {
                out.push(match step {
                    Step::Planned(rp) => rp,
                    Step::Prepared(prepared) => {
                        plan_request(i, layout, blocked, &certs, &mut live_keys, entry, prepared)
                    }
                });
            }
        };
        let next = || (rounds.get(k + 1)).map(|round| prepare_round(i, round, blocked, &certs));
        prepared = rayon::join(decide, next).1;
    }
    out
}

/// The parallel step of one round of requests: each read and checked, or planned if carried.
fn prepare_round<'a>(
    i: &'a Inputs,
    round: &[(&String, Source<'a>)],
    blocked: &BTreeSet<String>,
    certs: &ByRequest,
) -> Vec<Step<'a>> {
    use rayon::prelude::*;
    round
        .par_iter()
        .map(|(id, source)| match source {
            Source::Carried(c) => Step::Planned(plan_carried(id, c, blocked, certs)),
            _ => Step::Prepared(prepare(i, id, source)),
        })
        .collect()
}

/// A request after the parallel step of the plan. Held for at most two rounds (1,024 of them
/// each, under 1 MB), so the sizes of the variants need not match.
#[allow(clippy::large_enum_variant)]
enum Step<'a> {
    /// Carried: its plan is known already.
    Planned(RequestPlan),
    /// Read and checked, to be decided in id order.
    Prepared(Prepared<'a>),
}

/// What every request's plan starts from: its current certificate, rejected until decided.
fn plan_start(id: &str, current: Option<(&String, &CertSummary)>, source: &Source) -> RequestPlan {
    RequestPlan {
        serial: current.map(|(s, _)| s.clone()),
        not_after: current.map(|(_, c)| c.not_after),
        // Rejected or blocked requests are planned in full next time (no hash).
        carry: (!matches!(source, Source::Layout(_))).then(Carried::default),
        ..RequestPlan::new(id.to_string(), Action::Rejected)
    }
}

/// A carried request: triage carries only what a full plan leaves unchanged.
fn plan_carried(
    id: &str,
    c: &Carried,
    blocked: &BTreeSet<String>,
    certs: &ByRequest,
) -> RequestPlan {
    let mut rp = plan_start(id, ByRequest::current(certs.of(id)), &Source::Carried(c));
    if blocked.contains(id) {
        rp.action = Action::Revoked;
    } else {
        rp.policy = Some(c.policy.clone());
        rp.action = Action::Unchanged;
        rp.carry = Some(c.clone());
    }
    rp
}

/// One request's plan, decided after every request before it in id order (key reuse).
fn plan_request(
    i: &Inputs,
    layout: &Layout,
    blocked: &BTreeSet<String>,
    certs: &ByRequest,
    live_keys: &mut LiveKeys,
    (id, source): &(&String, Source),
    prepared: Prepared,
) -> RequestPlan {
    let id: &String = id;
    let mine = certs.of(id);
    let current = ByRequest::current(mine);
    let mut rp = plan_start(id, current, source);
    if blocked.contains(id) {
        rp.action = Action::Revoked;
        return rp;
    }
    let checked = match source {
        Source::Carried(_) => unreachable!("carried requests are planned in the parallel step"),
        Source::File(_) => prepared.and_then(|p| decide(i, id, p, i.policies, certs, live_keys)),
        Source::Layout(l) => {
            rp.warnings = l.warnings.clone();
            // A gitca policy selecting the id wins over the built-in serverless one.
            let policies = if i.policies.iter().any(|p| p.selects_path(&l.id)) {
                i.policies
            } else {
                &layout.policies
            };
            let mut rejections = l.rejections.clone();
            // The serverless CA copies a CSR's subject emailAddress; gitca cannot.
            if let Ok(p) = &prepared
                && p.csr.has_subject_email()
            {
                let f = Finding::new(
                    Code::ServerlessNotSupported,
                    id,
                    format!(
                        "{}: the CSR's subject emailAddress (which the serverless CA copies) is left out: gitca certificates carry no emailAddress attribute",
                        p.csr_path
                    ),
                );
                match i.config.serverless.as_ref().map(|c| c.mode) {
                    Some(ServerlessMode::Compatible) => rp.warnings.push(f),
                    _ => rejections.push(f),
                }
            }
            let decided = prepared.and_then(|p| decide(i, id, p, policies, certs, live_keys));
            match decided {
                Ok(x) if rejections.is_empty() => Ok(x),
                Ok(_) => Err(rejections),
                Err(f) if f == rejections => Err(f),
                Err(f) => Err(rejections.into_iter().chain(f).collect()),
            }
        }
    };
    match checked {
        Err(f) => {
            rp.findings = f;
            rp.live_certificate_no_longer_allowed = current.is_some_and(|(_, c)| c.is_live(i.now));
        }
        Ok((spec, policy_name)) => {
            if rp.carry.is_some() {
                rp.carry = Some(Carried {
                    csr: spec.csr_path.clone(),
                    hash: spec.request_hash.clone(),
                    lifetime_secs: spec.lifetime.0.as_secs(),
                    policy: policy_name.clone(),
                    revoke_superseded: spec.revoke_superseded,
                });
            }
            rp.policy = Some(policy_name);
            // The newest certificate, revoked or not: a request whose certificate was revoked
            // by serial gets no new one until the request itself changes.
            rp.action = match current {
                _ if certs.revoked_as_is(mine, &spec.request_hash) => Action::Revoked,
                None => Action::Issue,
                Some((_, c)) if c.request_hash != spec.request_hash => Action::Reissue,
                Some((_, c)) if c.renewal_due(i.now, i.config.issuance.renew_before.as_time()) => {
                    Action::Renew
                }
                Some(_) => Action::Unchanged,
            };
            if spec.revoke_superseded && rp.action != Action::Revoked {
                // Every live certificate but the one that stays current; recomputed on each
                // run, so a crash between issuing and revoking converges.
                let keep = (rp.action == Action::Unchanged)
                    .then(|| rp.serial.clone())
                    .flatten();
                rp.supersede = mine
                    .iter()
                    .filter(|(s, c)| c.is_live(i.now) && Some(*s) != keep.as_ref())
                    .map(|(s, _)| (*s).clone())
                    .collect();
            }
            if rp.action.issues() {
                // Later requests in this plan may not take the same key.
                live_keys.plan(&spec.key_id, id);
                rp.spec = Some(Box::new(spec));
            }
        }
    }
    rp
}

/// Requests prepared (read, CSR checked) per parallel round of the plan. The last round is
/// decided with nothing left to prepare beside it, on one thread: a round of 4,096 left the
/// other cores idle for up to its whole decision.
const PREPARE_ROUND: usize = 1024;

type Checked = Result<(IssueSpec, String), Vec<Finding>>;

/// A request read and its CSR checked: the part of the plan that needs no other request.
struct Ready<'a> {
    req: std::borrow::Cow<'a, RequestFile>,
    hash: String,
    /// The CSR's path (or where an inline CSR comes from), for messages.
    csr_path: String,
    csr: CheckedCsr,
}

type Prepared<'a> = Result<Ready<'a>, Vec<Finding>>;

fn prepare<'a>(i: &'a Inputs, id: &str, source: &Source<'a>) -> Prepared<'a> {
    let one = |code, msg: String| vec![Finding::new(code, id, msg)];
    let (req, yaml, csr_path, csr_bytes) = read_source(i.snapshot, id, source)?;
    let csr = check_csr(csr_bytes).map_err(|(c, m)| one(c, format!("{csr_path}: {m}")))?;
    Ok(Ready {
        hash: request_hash(&yaml, csr_bytes),
        req,
        csr_path,
        csr,
    })
}

/// A request's file (or layout entry), the bytes its hash covers, its CSR's path and bytes.
type SourceRead<'a> = (
    std::borrow::Cow<'a, RequestFile>,
    std::borrow::Cow<'a, [u8]>,
    String,
    &'a [u8],
);

fn read_source<'a>(
    snapshot: &'a Snapshot,
    id: &str,
    source: &Source<'a>,
) -> Result<SourceRead<'a>, Vec<Finding>> {
    let one = |code, msg: String| vec![Finding::new(code, id, msg)];
    Ok(match source {
        Source::File(entry) => {
            let yaml = blob(entry).map_err(|(c, m)| one(c, m))?;
            let req = RequestFile::parse(&String::from_utf8_lossy(yaml))
                .map_err(|e| one(Code::RequestInvalid, e))?;
            let csr_path = join_relative(id, &req.csr)
                .map_err(|e| one(Code::RequestInvalid, format!("csr: {e}")))?;
            let csr_bytes = csr_blob(snapshot, id, &csr_path)?;
            (
                std::borrow::Cow::Owned(req),
                std::borrow::Cow::Borrowed(yaml),
                csr_path,
                csr_bytes,
            )
        }
        Source::Carried(_) => unreachable!("carried requests are not read"),
        Source::Layout(l) => {
            let (Some(req), Some(csr)) = (&l.request, &l.csr) else {
                return Err(l.rejections.clone());
            };
            let (label, bytes) = match csr {
                Csr::Path(p) => (p.clone(), csr_blob(snapshot, &l.id, p)?),
                Csr::Inline(b) => (format!("{} base64_csr_data", l.file), b.as_slice()),
            };
            (
                std::borrow::Cow::Borrowed(req),
                std::borrow::Cow::Owned(l.canonical()),
                label,
                bytes,
            )
        }
    })
}

fn csr_blob<'a>(
    snapshot: &'a Snapshot,
    id: &str,
    csr_path: &str,
) -> Result<&'a [u8], Vec<Finding>> {
    let one = |code, msg: String| vec![Finding::new(code, id, msg)];
    match snapshot.files.get(csr_path) {
        None => Err(one(
            Code::CsrMissing,
            format!("CSR file {csr_path} is not in the commit"),
        )),
        Some(e) => blob(e).map_err(|(c, m)| one(c, format!("{csr_path}: {m}"))),
    }
}

/// gitca's decisions on one checked request: the CA's own key, compromised and reused keys,
/// its policy, the CA's lifetime.
fn decide(
    i: &Inputs,
    id: &str,
    ready: Ready,
    policies: &[Policy],
    certs: &ByRequest,
    live_keys: &LiveKeys,
) -> Checked {
    let one = |code, msg: String| vec![Finding::new(code, id, msg)];
    let Ready {
        req,
        hash,
        csr_path,
        csr,
    } = ready;
    if csr.key_id == i.ca.key_id {
        return Err(one(
            Code::CsrKeyIsCaKey,
            format!("{csr_path}: the CSR's key is the CA's own key"),
        ));
    }
    // A key revoked for key compromise is never certified again, whatever the request (it
    // used to be allowed where the revoked certificate was of the same request but not its
    // newest: renewals went on). A request whose newest certificate is the one revoked, as the
    // request still is, is reported as revoked instead (below), not rejected.
    if certs.key_compromised(&csr.key_id) && !certs.revoked_as_is(certs.of(id), &hash) {
        return Err(one(
            Code::KeyCompromised,
            format!(
                "{csr_path}: a certificate for this key was revoked for key compromise; use a new key"
            ),
        ));
    }
    if let Some(other) = live_keys.other_than(&csr.key_id, id) {
        return Err(one(
            Code::KeyReuse,
            format!(
                "{csr_path}: the public key is already used by {other} (a live certificate, or one planned in this run)"
            ),
        ));
    }
    let policy = policy::select(policies, id, req.policy.as_deref()).map_err(|f| vec![f])?;

    let mut findings = Vec::new();
    let mut extensions = Vec::new();
    for (n, x) in req.extensions.iter().enumerate() {
        match custom_extension(x) {
            Ok(e) => extensions.push(e),
            Err(m) => findings.push(Finding::new(
                Code::ExtensionNotAllowed,
                id,
                format!("extensions[{n}]: {m}"),
            )),
        }
    }
    let overrides = req.subject.clone().unwrap_or_default();
    let csr_subject = super::names::Subject::from_name(&csr.subject, &overrides)
        .map_err(|e| one(Code::CsrMalformed, format!("{csr_path}: {e}")))?;
    let candidate = Candidate {
        subject: csr_subject.merged(&overrides),
        sans: match &req.sans {
            Some(s) => s.clone(),
            None => (csr.sans.clone())
                .map_err(|e| one(Code::CsrMalformed, format!("{csr_path}: {e}")))?,
        },
        key: csr.key,
        lifetime: req.lifetime,
        usages: req.usages(),
        extension_oids: req.extensions.iter().map(|e| e.oid.clone()).collect(),
    };
    let v = policy::evaluate(policy, id, &candidate, i.config.issuance.default_lifetime);
    findings.extend(v.findings);
    let not_before = issue_start(
        i.now,
        i.config.issuance.backdate.as_time(),
        ByRequest::newest(certs.of(id)).map(|n| n.not_before),
    );
    let not_after = not_before + v.lifetime.as_time();
    // Due the moment it is signed (expired, if the lifetime is within the backdate): every run
    // would sign another.
    let renew_from = super::state::renewal_at(
        not_before,
        not_after,
        i.config.issuance.renew_before.as_time(),
    );
    if renew_from <= i.now {
        findings.push(Finding::new(
            Code::LifetimeTooShort,
            id,
            format!(
                "lifetime {} is too short: starting {not_before} (the backdate of {}), the \
                 certificate would be due for renewal at {renew_from}, as soon as it is issued, \
                 and every run would sign another",
                v.lifetime, i.config.issuance.backdate
            ),
        ));
    }
    if not_after > i.ca.not_after {
        findings.push(Finding::new(
            Code::LifetimeBeyondCa,
            id,
            format!(
                "the certificate would expire {not_after}, after the CA certificate ({})",
                i.ca.not_after
            ),
        ));
    }
    let subject = v
        .subject
        .to_name()
        .map_err(|e| one(Code::RequestInvalid, format!("subject: {e}")));
    let subject = match subject {
        Ok(s) => s,
        Err(f) => {
            findings.extend(f);
            Name::default()
        }
    };
    if !findings.is_empty() {
        return Err(findings);
    }
    let usages = candidate
        .usages
        .iter()
        .filter_map(|u| usage_oid(u).ok())
        .collect();
    Ok((
        IssueSpec {
            request_id: id.to_string(),
            request_hash: hash,
            key_id: csr.key_id,
            public_key: csr.public_key,
            key: csr.key,
            subject,
            sans: candidate.sans,
            usages,
            lifetime: v.lifetime,
            extensions,
            policy: policy.name.clone(),
            revoke_superseded: req.revoke_superseded,
            csr_path,
            not_before,
        },
        policy.name.clone(),
    ))
}

fn blob(e: &TreeEntry) -> Result<&[u8], (Code, String)> {
    match e {
        TreeEntry::Blob(b) if b.len() > MAX_REQUEST_BYTES => Err((
            Code::RequestTooLarge,
            format!("{} bytes, the limit is {MAX_REQUEST_BYTES}", b.len()),
        )),
        TreeEntry::Blob(b) => Ok(b),
        TreeEntry::Symlink => Err((
            Code::RequestNotRegularFile,
            "is a symbolic link; gitca reads regular files only".into(),
        )),
        TreeEntry::Submodule => Err((
            Code::RequestNotRegularFile,
            "is a submodule; gitca reads regular files only".into(),
        )),
        TreeEntry::TooLarge(n) => Err((
            Code::RequestTooLarge,
            format!("{n} bytes, the limit is {MAX_REQUEST_BYTES}"),
        )),
    }
}

fn custom_extension(
    x: &super::request::CustomExtension,
) -> Result<x509_cert::ext::Extension, String> {
    use base64ct::Encoding;
    let oid =
        ObjectIdentifier::new(&x.oid).map_err(|_| format!("{:?} is not a dotted OID", x.oid))?;
    let value =
        base64ct::Base64::decode_vec(&x.value).map_err(|_| "value is not base64".to_string())?;
    // The value must be one DER element, so the certificate stays well-formed.
    der::Any::from_der(&value).map_err(|e| format!("value is not DER: {e}"))?;
    Ok(x509_cert::ext::Extension {
        extn_id: oid,
        critical: x.critical,
        extn_value: der::asn1::OctetString::new(value).map_err(|e| e.to_string())?,
    })
}

use der::Decode;

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests whose outputs would collide are rejected, each naming the other: one stem under
    /// two suffixes, a certificate that is another's chain file, a stem under another's
    /// certificate or chain file. Of a pair, one holding a live certificate keeps its plan; a
    /// folder merely containing ".pem" in its name collides with nothing.
    #[test]
    fn requests_whose_outputs_collide_are_rejected_but_a_live_holder() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(1000);
        let ids = [
            ("requests/a.yaml", Action::Unchanged),
            ("requests/a.chain.pem/b.yaml", Action::Issue),
            ("requests/c.yaml", Action::Issue),
            ("requests/c.pem.d/e.yaml", Action::Issue),
            ("requests/w.chain.yaml", Action::Issue),
            ("requests/w.yaml", Action::Issue),
            ("requests/x.yaml", Action::Revoked),
            ("requests/x.yml", Action::Renew),
            ("requests/y.pem/z.yaml", Action::Issue),
        ];
        let mut requests: Vec<RequestPlan> = (ids.iter())
            .map(|(id, action)| RequestPlan::new(id.to_string(), *action))
            .collect();
        requests[0].serial = Some("01".into());
        requests[0].not_after = Some(now + time::Duration::days(1));
        // An expired certificate holds nothing.
        requests[7].serial = Some("02".into());
        requests[7].not_after = Some(now - time::Duration::days(1));
        reject_output_collisions(&mut requests, now);
        let got: Vec<(Action, String)> = (requests.iter())
            .map(|r| {
                assert!(
                    r.findings
                        .iter()
                        .all(|f| f.code == Code::OutputPathConflict)
                );
                let named = r.findings.iter().map(|f| f.message.as_str()).collect();
                (r.action, named)
            })
            .collect();
        let expected = [
            (Action::Unchanged, ""),
            (Action::Rejected, "those of requests/a.yaml"),
            (Action::Issue, ""),
            (Action::Issue, ""),
            (Action::Rejected, "those of requests/w.yaml"),
            (Action::Rejected, "those of requests/w.chain.yaml"),
            (Action::Revoked, "those of requests/x.yml"),
            (Action::Rejected, "those of requests/x.yaml"),
            (Action::Issue, ""),
        ];
        for ((id, _), ((action, named), (want, names))) in ids.iter().zip(got.iter().zip(expected))
        {
            assert_eq!(*action, want, "{id}: {named}");
            assert_eq!(named.is_empty(), names.is_empty(), "{id}: {named}");
            assert!(named.contains(names), "{id}: {named}");
        }
        assert!(
            !requests
                .iter()
                .any(|r| r.live_certificate_no_longer_allowed)
        );
    }

    /// A new certificate starts `backdate` before now, or a second after the request's newest
    /// if that started as late (whole seconds: the newest is served), but never after now, even
    /// after a certificate dated ahead by a clock that was.
    #[test]
    fn a_certificate_starts_after_its_requests_newest_but_never_after_now() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let backdate = time::Duration::minutes(5);
        let second = time::Duration::SECOND;
        let wanted = now - backdate;
        let cases = [
            (None, wanted),
            (Some(wanted - time::Duration::days(3)), wanted),
            (Some(wanted - second), wanted),
            (Some(wanted), wanted + second),
            (
                Some(wanted + time::Duration::minutes(2)),
                wanted + time::Duration::minutes(2) + second,
            ),
            (Some(now - second), now),
            (Some(now + time::Duration::hours(1)), now),
        ];
        for (newest, start) in cases {
            assert_eq!(
                issue_start(now, backdate, newest),
                start,
                "newest {newest:?}"
            );
        }
        // With no backdate, a certificate of the same second is not followed past now.
        assert_eq!(issue_start(now, time::Duration::ZERO, Some(now)), now);
    }

    /// The requests among a few ids are found in an id-ordered plan and in one that is not.
    #[test]
    fn present_among_finds_the_planned_requests_in_any_order() {
        let ids: BTreeSet<String> = ["requests/b.yaml", "requests/d.yaml", "requests/zz.yaml"]
            .into_iter()
            .map(String::from)
            .collect();
        let mut p = Plan {
            requests: ["a", "b", "c", "d", "e"]
                .iter()
                .map(|n| RequestPlan::new(format!("requests/{n}.yaml"), Action::Unchanged))
                .collect(),
            ..Default::default()
        };
        let expected: foldhash::HashSet<&str> =
            ["requests/b.yaml", "requests/d.yaml"].into_iter().collect();
        assert_eq!(p.present_among(&ids), expected);
        p.requests.reverse();
        let ids_again = ids.clone();
        assert_eq!(p.present_among(&ids_again), expected, "not in id order");
    }
}
