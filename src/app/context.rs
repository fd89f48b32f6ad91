//! Loads what every command needs: the repository, its config, the CA certificates, the state.

use crate::adapters::git::GitRepo;
use crate::adapters::state_store::{DirStore, StateStore};
use crate::domain::config::Config;
use crate::domain::csr::{KeyKind, key_id};
use crate::domain::incremental::{Basis, Change, triage};
use crate::domain::plan::{CaFacts, Snapshot, TreeEntry};
use crate::domain::policy::Policy;
use crate::domain::profile::{Issuer, from_time, key_identifier};
use crate::domain::state::Index;
use der::{Decode, DecodePem};
use sha2::Digest;
use std::path::{Path, PathBuf};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;

pub const CONFIG_FILE: &str = "gitca.yaml";

/// Where to find the repository (from the CLI).
#[derive(Debug, Clone)]
pub struct RepoArgs {
    pub repo: PathBuf,
    pub dir: Option<String>,
}

/// The per-user data directory of the embedded defaults (keys, local state).
pub fn data_dir() -> Result<PathBuf, String> {
    // Empty is unset (as for GITCA_THREADS); a relative folder would put keys and state
    // wherever the command runs, the repository's work tree among them.
    if let Some(d) = std::env::var_os("GITCA_DATA_DIR").filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        if !d.is_absolute() {
            return Err(format!(
                "GITCA_DATA_DIR {} must be an absolute path",
                d.display()
            ));
        }
        return Ok(d);
    }
    directories::ProjectDirs::from("", "", "gitca")
        .map(|p| p.data_dir().to_path_buf())
        .ok_or_else(|| "no home directory; set GITCA_DATA_DIR".to_string())
}

fn expand(p: &str, what: &str) -> Result<PathBuf, String> {
    if let Some(rest) = p.strip_prefix("~/") {
        let home = directories::BaseDirs::new().ok_or("no home directory to expand ~")?;
        return Ok(home.home_dir().join(rest));
    }
    let path = PathBuf::from(p);
    if !path.is_absolute() {
        return Err(format!(
            "{what} {p:?} must be an absolute path or start with ~/"
        ));
    }
    Ok(path)
}

pub fn key_path(cfg: &Config, file_name: &str) -> Result<PathBuf, String> {
    match cfg.signer.local.as_ref().and_then(|l| l.key.as_deref()) {
        Some(k) if file_name == "issuing-ca.key" => expand(k, "signer.local.key"),
        _ => Ok(data_dir()?.join(&cfg.ca.name).join(file_name)),
    }
}

pub fn state_path(cfg: &Config) -> Result<PathBuf, String> {
    match &cfg.state.dir {
        Some(d) => expand(d, "state.dir"),
        None => Ok(data_dir()?.join(&cfg.ca.name).join("state")),
    }
}

/// Refuses a key path inside the repository: private keys never go into Git. Inside is any of
/// [`GitRepo::git_places`] (the whole work tree, also outside the CA's `--dir` folder, the git
/// directory and every linked worktree). A path is inside if it leads there, through symbolic
/// links and `..` (a folder not yet made below a link into the work tree), or is written there
/// with its `..` taken away (a link in the work tree to a key elsewhere; so `<link>/../x` is
/// refused even where the link leads out). `<repo>/../data` is neither. A path whose place
/// cannot be told is refused.
pub fn refuse_key_in_repo(key: &Path, repo: &GitRepo) -> Result<(), String> {
    let absolute = std::path::absolute(key).map_err(|e| {
        format!(
            "cannot tell whether the CA key path {} is inside the repository: {e}",
            key.display()
        )
    })?;
    let as_written = with_parts(PathBuf::new(), absolute.components());
    let leads_to = resolved(&absolute);
    for place in repo.git_places() {
        let real = place.canonicalize().unwrap_or_else(|_| place.clone());
        if [&leads_to, &as_written]
            .iter()
            .any(|k| k.starts_with(&real) || k.starts_with(&place))
        {
            return Err(format!(
                "the CA key path {} is inside the repository ({}); keys must live outside it",
                key.display(),
                place.display()
            ));
        }
    }
    Ok(())
}

/// Where an absolute `path` leads: its longest existing start with every link and `..`
/// resolved (the file system's answer), then the parts that do not exist yet, which hold no
/// link, taken as written.
fn resolved(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut missing = Vec::new();
    // The root of an absolute path exists, so this ends.
    let real = loop {
        if let Ok(real) = existing.canonicalize() {
            break real;
        }
        match (existing.components().next_back(), existing.parent()) {
            (Some(last), Some(parent)) => {
                missing.push(last);
                existing = parent;
            }
            _ => break PathBuf::from("/"),
        }
    };
    with_parts(real, missing.into_iter().rev())
}

/// `base` with `parts` added, `..` dropping the part before it and `.` nothing.
fn with_parts<'a>(
    mut base: PathBuf,
    parts: impl IntoIterator<Item = std::path::Component<'a>>,
) -> PathBuf {
    use std::path::Component;
    for part in parts {
        match part {
            Component::ParentDir => {
                base.pop();
            }
            Component::CurDir => {}
            other => base.push(other),
        }
    }
    base
}

pub fn parse_cert(path: &str, bytes: &[u8]) -> Result<Certificate, String> {
    let text = std::str::from_utf8(bytes).ok();
    let c = match text {
        Some(t) if t.contains("-----BEGIN") => Certificate::from_pem(t.as_bytes()),
        _ => Certificate::from_der(bytes),
    };
    c.map_err(|e| format!("{path}: not a certificate: {e}"))
}

/// The loaded CA repository at one commit (or the work tree).
pub struct Context {
    pub repo: GitRepo,
    pub snapshot: Snapshot,
    pub config: Config,
    pub policies: Vec<Policy>,
    pub ca_cert: Certificate,
    pub chain: Vec<Certificate>,
    pub store: std::sync::Arc<dyn StateStore>,
    /// How much of the repository was read.
    pub scan: Scan,
    /// The index as read while loading (an incremental load needs it), with its version;
    /// taken by the reconcile so it is not read twice.
    pub index_at_load: std::sync::Mutex<Option<(Index, Option<String>)>>,
    /// The plan basis as seen while loading (None: not read), so the run that records the next
    /// one need not read it again.
    pub basis_at_load: Option<BasisSeen>,
}

/// A stored plan basis: None when absent, else its version and the SHA-256 of its bytes.
pub type BasisSeen = Option<(String, Vec<u8>)>;

/// What to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every file of the commit.
    Full,
    /// Only what changed since the last reconcile (see `domain::incremental`), at this time;
    /// the whole commit when that cannot be used.
    Incremental(time::OffsetDateTime),
    /// The configuration and CA certificates only (to open the signer and the store).
    Minimal,
}

/// How much of the repository the snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    Full {
        /// Why not incremental, when it was asked for.
        reason: Option<String>,
    },
    Incremental {
        /// The commit the basis was recorded for.
        basis_commit: String,
        /// Requests of the basis deleted since.
        deleted: std::collections::BTreeSet<String>,
        /// The output folder's tree id when the basis was recorded.
        outputs_tree: Option<String>,
    },
    Minimal,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Context({:?} at {})", self.repo, self.snapshot.commit)
    }
}

fn file<'a>(snap: &'a Snapshot, path: &str) -> Result<&'a [u8], String> {
    match snap.files.get(path) {
        Some(TreeEntry::Blob(b)) => Ok(b),
        Some(_) => Err(format!("{path}: must be a regular file in the commit")),
        None => Err(format!("{path}: not found in commit {}", snap.commit)),
    }
}

impl Context {
    /// `rev` None means the work tree (`plan --worktree`).
    pub async fn load(args: &RepoArgs, rev: Option<&str>) -> Result<Context, String> {
        Context::load_scoped(args, rev, true, Scope::Full).await
    }

    /// `with_state` false: plan against an empty state without touching the state store.
    pub async fn load_with(
        args: &RepoArgs,
        rev: Option<&str>,
        with_state: bool,
    ) -> Result<Context, String> {
        Context::load_scoped(args, rev, with_state, Scope::Full).await
    }

    pub async fn load_scoped(
        args: &RepoArgs,
        rev: Option<&str>,
        with_state: bool,
        scope: Scope,
    ) -> Result<Context, String> {
        let repo = GitRepo::open(&args.repo, args.dir.as_deref())?;
        // Resolved once: the configuration and the requests come from one commit, even if the
        // branch moves while the state is opened.
        let commit = rev.map(|r| repo.resolve(r)).transpose()?;
        // Read the config first (from the same source) to learn which folders are outputs.
        let config_bytes = match &commit {
            Some(c) => repo.read_regular_file(c, CONFIG_FILE)?.ok_or_else(|| {
                format!("{CONFIG_FILE}: not found in commit {c}; run `gitca init` first")
            })?,
            None => std::fs::read(repo.workdir().ok_or("bare repository")?.join(CONFIG_FILE))
                .map_err(|e| format!("{CONFIG_FILE}: {e}"))?,
        };
        let config = Config::parse(CONFIG_FILE, &String::from_utf8_lossy(&config_bytes))?;
        let store: std::sync::Arc<dyn StateStore> = match &config.state.s3 {
            _ if !with_state => std::sync::Arc::new(crate::adapters::state_store::EmptyStore),
            Some(loc) => std::sync::Arc::new(crate::adapters::s3_store::S3Store::open(loc).await?),
            None => std::sync::Arc::new(DirStore::open(&state_path(&config)?)?),
        };
        let skip = vec![config.output.dir.clone()];
        let mut index_at_load = None;
        let mut basis_at_load = None;
        let (snapshot, scan) = match (scope, &commit) {
            (_, None) => (repo.worktree_snapshot(&skip)?, Scan::Full { reason: None }),
            (Scope::Full, Some(c)) => (repo.snapshot(c, &skip)?, Scan::Full { reason: None }),
            (Scope::Minimal, Some(c)) => (
                repo.snapshot_partial(c, &skip, &Default::default(), |_, _| None)?,
                Scan::Minimal,
            ),
            (Scope::Incremental(now), Some(c)) => {
                let ca = repo
                    .read_file(c, &config.ca.certificate)?
                    .ok_or_else(|| format!("{}: not found in commit {c}", config.ca.certificate))?;
                let facts = ca_facts_of(&parse_cert(&config.ca.certificate, &ca)?);
                // The index (tens of MB at 100,000 certificates) is read and parsed on another
                // core while the basis is read and the commits diffed.
                let index_read = {
                    let (store, key_id) = (store.clone(), facts.key_id.clone());
                    tokio::spawn(async move { super::index::read(store.as_ref(), &key_id).await })
                };
                let since_basis = changes_since_basis(
                    &repo,
                    store.as_ref(),
                    &config,
                    c,
                    &skip,
                    &mut basis_at_load,
                )
                .await;
                let (index, version) = index_read
                    .await
                    .map_err(|e| format!("reading the state index: {e}"))??;
                let loaded = match since_basis? {
                    Ok((mut basis, changes)) => Ok(incremental_snapshot(
                        &repo, &skip, c, &mut basis, &changes, &index, &config, &facts, now,
                    )?),
                    Err(reason) => Err(reason),
                };
                index_at_load = Some((index, version));
                match loaded {
                    Ok(x) => x,
                    Err(reason) => {
                        tracing::info!(%reason, "planning every request");
                        (
                            repo.snapshot(c, &skip)?,
                            Scan::Full {
                                reason: Some(reason),
                            },
                        )
                    }
                }
            }
        };
        let mut policies = Vec::new();
        for (path, entry) in &snapshot.files {
            if path.starts_with("policies/") && (path.ends_with(".yaml") || path.ends_with(".yml"))
            {
                let TreeEntry::Blob(b) = entry else {
                    return Err(format!("{path}: policies must be regular files"));
                };
                policies.push(Policy::parse(path, &String::from_utf8_lossy(b))?);
            }
        }
        let ca_cert = parse_cert(
            &config.ca.certificate,
            file(&snapshot, &config.ca.certificate)?,
        )?;
        let chain = config
            .ca
            .chain
            .iter()
            .map(|p| parse_cert(p, file(&snapshot, p)?))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Context {
            repo,
            snapshot,
            config,
            policies,
            ca_cert,
            chain,
            store,
            scan,
            index_at_load: std::sync::Mutex::new(index_at_load),
            basis_at_load,
        })
    }

    pub fn issuer(&self) -> Result<Issuer, String> {
        issuer_of(&self.ca_cert)
    }

    pub fn ca_facts(&self) -> CaFacts {
        ca_facts_of(&self.ca_cert)
    }

    /// The index, or a fresh one for a new CA. A state of another CA key is refused.
    pub async fn index(&self) -> Result<(Index, Option<String>), String> {
        super::index::read(self.store.as_ref(), &self.ca_facts().key_id).await
    }
}

pub fn ca_facts_of(cert: &Certificate) -> CaFacts {
    let tbs = cert.tbs_certificate();
    CaFacts {
        key_id: key_id(tbs.subject_public_key_info()),
        not_after: from_time(&tbs.validity().not_after),
    }
}

/// The recorded plan basis and the paths changed since its commit, or why this run cannot
/// plan incrementally (`Ok(Err(reason))`).
async fn changes_since_basis(
    repo: &GitRepo,
    store: &dyn StateStore,
    config: &Config,
    commit: &str,
    skip: &[String],
    seen: &mut Option<BasisSeen>,
) -> Result<Result<(Basis, Vec<Change>), String>, String> {
    use crate::domain::incremental::{BASIS_KEY, needs_full_scan};
    // An interrupted run's intents are completed before planning and change the state the
    // triage would read: plan in full.
    if !store
        .list("intents/")
        .await
        .map_err(|e| e.to_string())?
        .is_empty()
    {
        return Ok(Err("an interrupted run left intents to complete".into()));
    }
    let stored = store.get(BASIS_KEY).await.map_err(|e| e.to_string())?;
    *seen = Some(
        stored
            .as_ref()
            .map(|v| (v.version.clone(), sha2::Sha256::digest(&v.bytes).to_vec())),
    );
    let Some(v) = stored else {
        return Ok(Err("no reconcile has recorded a plan basis yet".into()));
    };
    let basis = match Basis::parse(&String::from_utf8_lossy(&v.bytes)) {
        Ok(b) if b.version == crate::domain::incremental::PLAN_RULES => b,
        Ok(b) => {
            return Ok(Err(format!(
                "the plan basis was recorded by another gitca build ({})",
                b.version
            )));
        }
        Err(e) => return Ok(Err(e)),
    };
    let changes = match repo.changed_paths(&basis.commit, commit, skip) {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("cannot diff against {}: {e}", basis.commit))),
    };
    if let Some(reason) = needs_full_scan(&changes, config) {
        return Ok(Err(reason));
    }
    Ok(Ok((basis, changes)))
}

/// The snapshot of an incremental reconcile: the requests triage cannot carry are read.
#[allow(clippy::too_many_arguments)]
fn incremental_snapshot(
    repo: &GitRepo,
    skip: &[String],
    commit: &str,
    basis: &mut Basis,
    changes: &[Change],
    index: &Index,
    config: &Config,
    facts: &CaFacts,
    now: time::OffsetDateTime,
) -> Result<(Snapshot, Scan), String> {
    let t = triage(basis, changes, index, config, facts, now);
    let mut snapshot = repo.snapshot_partial(commit, skip, &t.load, |id, entry| {
        let TreeEntry::Blob(b) = entry else {
            return None;
        };
        let req = crate::domain::request::RequestFile::parse(&String::from_utf8_lossy(b)).ok()?;
        crate::domain::names::join_relative(id, &req.csr).ok()
    })?;
    tracing::info!(
        read = t.load.len(),
        carried = t.carried.len(),
        changed = changes.len(),
        "incremental plan since {}",
        basis.commit
    );
    snapshot.carried = t.carried;
    Ok((
        snapshot,
        Scan::Incremental {
            basis_commit: std::mem::take(&mut basis.commit),
            deleted: t.deleted,
            outputs_tree: basis.outputs_tree.take(),
        },
    ))
}

/// Issuer facts of a CA certificate; its SKI is used as the AKI of everything it signs.
pub fn issuer_of(cert: &Certificate) -> Result<Issuer, String> {
    let tbs = cert.tbs_certificate();
    let spki = tbs.subject_public_key_info().clone();
    let ski = tbs
        .get_extension::<SubjectKeyIdentifier>()
        .map_err(|e| e.to_string())?
        .map(|(_, s)| s.0.as_bytes().to_vec())
        .unwrap_or_else(|| key_identifier(&spki));
    let kind = KeyKind::of(&spki)?;
    Ok(Issuer {
        name: tbs.subject().clone(),
        key_identifier: ski,
        algorithm: crate::adapters::signer::algorithm_for(kind)?,
        public_key: spki,
        not_after: from_time(&tbs.validity().not_after),
    })
}
