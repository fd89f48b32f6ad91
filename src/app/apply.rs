//! `gitca apply` and `gitca crl`: plan, record intents, sign, persist, write outputs, commit.
//!
//! Order matters for exactly-once issuance (Boulder's model): the intent (serial + TBS) is
//! recorded before signing, the certificate is recorded before the index points at it, and the
//! repository outputs are derived from the state alone. A crash at any step leaves a state that
//! the next run completes without signing a second certificate for the same request.

use super::context::{BasisSeen, Context, RepoArgs, Scan, Scope, key_path};
use super::index::{IndexHandle, Staged};
use super::lease::{self, LeaseGuard};
use super::{Exit, RunError, outputs};
use crate::adapters::aws::ErrorClass;
use crate::adapters::git::PendingCommit;
use crate::adapters::kms::{self, KmsSigner};
use crate::adapters::signer::{
    LocalSigner, SignError, Signer, SignerStats, check_matches, sign_all, sign_all_with,
    sign_verified, verifier_of,
};
use crate::adapters::state_store::StoreError;
use crate::domain::crl::{self, CrlEntry};
use crate::domain::plan::{self, Action, Inputs, IssueSpec, Plan, RevocationAction};
use crate::domain::profile::{self, Issuer, Urls, from_time};
use crate::domain::revocation::Reason;
use crate::domain::serial::new_serials;
use crate::domain::state::{
    CertRecord, CertSummary, CrlInfo, Index, PreviousCaRevocation, PublishedRevocation, Revoked,
    crl_key, der_base64, intent_key, intents_of, record_key, records_json_into, records_of,
    round_key,
};
use base64ct::{Base64, Encoding};
use der::{Decode, Encode};
use serde::Serialize;
use sha2::Digest;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use x509_cert::certificate::TbsCertificate;
use x509_cert::time::Validity;

/// Signing progress: a bar on a terminal, a plain line every 10% otherwise (CI logs).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    done: std::sync::atomic::AtomicUsize,
}

impl Progress {
    fn new(total: usize) -> Progress {
        use std::io::IsTerminal;
        let bar = (total >= 20 && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "signing {bar:40} {pos}/{len} {per_sec} eta {eta}",
            ) {
                b.set_style(style);
            }
            b
        });
        Progress {
            bar,
            total,
            done: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn tick(&self) {
        let n = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        match &self.bar {
            Some(b) => b.inc(1),
            None if self.total >= 20 && n.is_multiple_of((self.total / 10).max(1)) => {
                tracing::info!("signed {n}/{}", self.total)
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Steps after which a test can make apply stop as if the process had died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailPoint {
    AfterIntent,
    AfterSign,
    AfterRecord,
    AfterState,
    AfterCrl,
    AfterOutputs,
    BeforeCommit,
    /// In the write of a round's records beside the next round (every round but the last),
    /// before anything is written: a kill there leaves rounds' intents without records.
    BesideRecord,
    /// In the write of a round's intents beside the round before (every round but the first),
    /// before anything is written.
    BesideIntent,
}

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub push: bool,
    pub allow_history_rewrite: bool,
    /// The reconcile time (tests move it forward to exercise renewal and CRL refresh).
    pub now: Option<OffsetDateTime>,
    pub fail_at: Option<FailPoint>,
    /// Testing only: hang (as a stuck or about-to-be-killed process) after this step.
    pub hang_at: Option<FailPoint>,
    pub lease_ttl: Duration,
    pub lease_wait: Duration,
    pub max_push_attempts: u32,
    /// `gitca crl`: only refresh the CRL (no issuance, no new revocations).
    pub crl_only: bool,
    /// Append this run's events (JSON Lines) to this file.
    pub events_file: Option<std::path::PathBuf>,
    /// `gitca crl --force`: re-sign the CRL even if it is current.
    pub force_crl: bool,
    /// Plan every request instead of only what changed since the last reconcile.
    pub full_scan: bool,
    /// Certificates issued per round (intents, signatures, records); tests make it small.
    pub issue_chunk: usize,
    /// At most this many new certificates are encoded as PEM beside the state writes (see
    /// `outputs::FreshPems`); tests make it small.
    pub pem_beside: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            push: false,
            allow_history_rewrite: false,
            now: None,
            fail_at: None,
            hang_at: None,
            lease_ttl: Duration::from_secs(600),
            lease_wait: Duration::from_secs(120),
            max_push_attempts: 5,
            crl_only: false,
            full_scan: false,
            events_file: None,
            force_crl: false,
            issue_chunk: ISSUE_CHUNK,
            pem_beside: outputs::PEM_BESIDE,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    pub request_id: String,
    pub serial: String,
    pub action: Action,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

#[derive(Debug, Default, Serialize)]
pub struct ApplyOutcome {
    pub plan: Plan,
    pub issued: Vec<Issued>,
    pub revoked: Vec<String>,
    pub crl_number: Option<u64>,
    pub commit: Option<String>,
    pub pushed: bool,
    /// Intents of an interrupted run that this run completed.
    pub recovered: usize,
    /// Intents of an interrupted run whose request changed since, or whose recorded TBS no longer
    /// passes the profile check; dropped unsigned.
    pub abandoned: usize,
    pub signatures: usize,
    /// Remote signer calls and retries (KMS).
    pub signer: SignerStats,
    /// Objects uploaded to the publication bucket.
    pub published: Vec<String>,
    pub seconds: f64,
    /// Of which signing the certificates took (sign and verify, all in flight).
    pub sign_seconds: f64,
    /// Events sent (file, SNS, webhook).
    pub events: usize,
    /// How much of the repository the plan read.
    pub scan: ScanSummary,
    /// `gitca crl` only: why the commit did not plan. The CRL was refreshed from the state
    /// anyway, and nothing else written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanSummary {
    /// `full`, `incremental`, or `quiet` (nothing changed since a reconcile that had nothing
    /// to do: nothing was read).
    pub kind: &'static str,
    /// Requests read and planned in full.
    pub read: usize,
    /// Requests carried unchanged from the last reconcile.
    pub carried: usize,
    /// Why the plan was full, or why nothing was planned (quiet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ApplyOutcome {
    pub fn exit(&self) -> Exit {
        if self.plan.has_rejections() {
            Exit::Rejections
        } else {
            Exit::Clean
        }
    }
}

async fn fail(opts: &ApplyOptions, at: FailPoint) -> Result<(), RunError> {
    fail_or_hang(opts.fail_at, opts.hang_at, at).await
}

/// [`fail`] with the two test options alone, for a task that does not borrow the options.
async fn fail_or_hang(
    fail_at: Option<FailPoint>,
    hang_at: Option<FailPoint>,
    at: FailPoint,
) -> Result<(), RunError> {
    if hang_at == Some(at) {
        eprintln!("gitca: hanging at {at:?} (test failpoint)");
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if fail_at == Some(at) {
        return Err(RunError::Retryable(format!("injected failure at {at:?}")));
    }
    Ok(())
}

/// The configured signer (local key or KMS), refused unless its key is the CA certificate's.
pub async fn open_signer(ctx: &Context) -> Result<Box<dyn Signer>, String> {
    let s: Box<dyn Signer> = match &ctx.config.signer.kms {
        Some(k) => Box::new(
            KmsSigner::open(
                kms::client(k.region.as_deref()).await,
                &k.key,
                k.max_in_flight,
                k.max_retries,
            )
            .await?,
        ),
        None => {
            let path = key_path(&ctx.config, "issuing-ca.key")?;
            super::context::refuse_key_in_repo(&path, &ctx.repo)?;
            Box::new(LocalSigner::load(&path)?)
        }
    };
    signs_for(ctx, s.as_ref())?;
    Ok(s)
}

/// Refuses a signer whose key is not the key of `ctx`'s CA certificate.
fn signs_for(ctx: &Context, signer: &dyn Signer) -> Result<(), String> {
    check_matches(
        signer,
        ctx.ca_cert.tbs_certificate().subject_public_key_info(),
        &ctx.config.ca.certificate,
    )
}

pub async fn apply(args: &RepoArgs, opts: &ApplyOptions) -> Result<ApplyOutcome, RunError> {
    let started = std::time::Instant::now();
    // One time for the whole run: what is carried and what is planned must agree.
    let mut opts = opts.clone();
    let now = *opts.now.get_or_insert_with(|| {
        let t = OffsetDateTime::now_utc();
        t.replace_nanosecond(0).unwrap_or(t)
    });
    let opts = &opts;
    let first = Context::load_scoped(args, Some("HEAD"), true, Scope::Minimal).await?;
    first.repo.current_branch()?;
    if opts.push {
        refuse_unpushed(&first)?;
    }
    let signer = open_signer(&first).await?;
    let store = first.store.clone();
    let taken = lease::acquire(store.as_ref(), opts.lease_ttl, opts.lease_wait).await?;
    let held = lease::Held::keep(store.clone(), taken, opts.lease_ttl);
    // Load under the lease: another apply may have committed while this one waited.
    let result = match super::quiet::check(&first, opts, now).await {
        Ok(Some(quiet)) => Ok(quiet),
        Ok(None) => {
            // This run plans: the random generator is seeded while the state loads.
            crate::adapters::signer::warm_up_random();
            match load_for_apply(args, opts, now)
                .await
                .map_err(RunError::from)
                .and_then(|ctx| still_ours(ctx, &first.store.describe(), signer.as_ref()))
            {
                Ok(mut ctx) => {
                    let applied =
                        apply_with_retries(args, opts, signer.as_ref(), &mut ctx, held.guard())
                            .await;
                    super::free_in_background(ctx);
                    applied
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    held.release(store.as_ref()).await;
    let mut outcome = result?;
    outcome.signer = signer.stats();
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// With `--push`, the commit to sign must be on the remote already, merged by review there: a
/// local commit would be signed and then pushed, or dropped by a push retry with its
/// certificates signed. A commit that changes only gitca's outputs (the outputs commit of a run
/// whose push failed) changes nothing signed, and is pushed with the next: refusing it stopped
/// every later `--push` run, a cron's `crl --push` too. Known by what it changes, not by its
/// message, which an amended or cherry-picked commit carries as well.
fn refuse_unpushed(ctx: &Context) -> Result<(), RunError> {
    let mut theirs = Vec::new();
    for c in ctx.repo.unpushed_commits()? {
        if !ctx.repo.changes_only(&c, |p| ctx.config.output.holds(p))? {
            theirs.push(c);
        }
    }
    if theirs.is_empty() {
        return Ok(());
    }
    Err(RunError::NeedsHuman(format!(
        "apply --push signs only what the remote holds, and HEAD has {} commit(s) it does not \
         ({}): push them through a pull request, or reset the branch to the remote's \
         (`git reset --keep @{{u}}`)",
        theirs.len(),
        theirs
            .iter()
            .map(|c| &c[..12])
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// `ctx`, loaded under the lease, if it is still the CA and the state the run opened its
/// signer for and took the lease in. A commit that landed meanwhile (while the lease was
/// awaited, or before a push retry) may rotate the CA or move its state: certificates named
/// for the new CA would be signed with the old key, in a state this run holds no lease on.
fn still_ours(ctx: Context, leased: &str, signer: &dyn Signer) -> Result<Context, RunError> {
    let changed = |what: &str| {
        RunError::Retryable(format!(
            "{what} changed in a commit that landed while this apply ran; nothing was signed \
             for it, run apply again"
        ))
    };
    if ctx.store.describe() != leased {
        return Err(changed("the state's location"));
    }
    signs_for(&ctx, signer).map_err(|_| changed("the CA certificate's key"))?;
    Ok(ctx)
}

async fn apply_with_retries(
    args: &RepoArgs,
    opts: &ApplyOptions,
    signer: &dyn Signer,
    ctx: &mut Context,
    lease: &LeaseGuard,
) -> Result<ApplyOutcome, RunError> {
    let first_store = ctx.store.describe();
    let mut attempt = 1;
    loop {
        let mut outcome = reconcile(ctx, signer, opts, lease).await?;
        if !opts.push {
            return Ok(outcome);
        }
        if ctx.repo.push()? {
            outcome.pushed = true;
            return Ok(outcome);
        }
        if attempt >= opts.max_push_attempts {
            return Err(RunError::Retryable(format!(
                "the remote moved {attempt} times while pushing; the state is saved, run apply again"
            )));
        }
        attempt += 1;
        let ours = outcome
            .commit
            .clone()
            .unwrap_or_else(|| ctx.snapshot.commit.clone());
        let new_head = ctx.repo.reset_to_upstream(&ours, &ctx.snapshot.commit)?;
        tracing::info!(%new_head, attempt, "the remote moved; re-planning on its head");
        let now = opts.now.unwrap_or_else(OffsetDateTime::now_utc);
        let reloaded = load_for_apply(args, opts, now).await?;
        *ctx = still_ours(reloaded, &first_store, signer)?;
    }
}

async fn load_for_apply(
    args: &RepoArgs,
    opts: &ApplyOptions,
    now: OffsetDateTime,
) -> Result<Context, String> {
    let scope = if opts.full_scan {
        Scope::Full
    } else {
        Scope::Incremental(now)
    };
    Context::load_scoped(args, Some("HEAD"), true, scope).await
}

fn urls(ctx: &Context) -> Urls {
    Urls {
        crl_distribution_point: ctx.config.crl.distribution_point.clone(),
        ca_issuers: ctx.config.aia.ca_issuers.clone(),
    }
}

/// The index entry of a record; `round`: the round object that holds it (None: its own).
fn summary_of(rec: &CertRecord, round: Option<&Arc<str>>) -> Result<CertSummary, String> {
    let tbs = TbsCertificate::from_der(&Base64::decode_vec(&rec.tbs).map_err(|e| e.to_string())?)
        .map_err(|e| format!("serial {}: recorded TBS does not decode: {e}", rec.serial))?;
    Ok(summary_from(rec, tbs.validity(), round))
}

/// The index entry of a record whose validity is at hand (decoded or just built).
fn summary_from(rec: &CertRecord, validity: &Validity, round: Option<&Arc<str>>) -> CertSummary {
    CertSummary {
        request_id: rec.request_id.clone(),
        request_hash: rec.request_hash.clone(),
        key_id: rec.key_id.clone(),
        not_before: from_time(&validity.not_before),
        not_after: from_time(&validity.not_after),
        revoked: None,
        round: round.cloned(),
    }
}

fn make_plan(ctx: &Context, index: &Index, now: OffsetDateTime) -> Result<Plan, RunError> {
    let facts = ctx.ca_facts();
    plan::plan(&Inputs {
        snapshot: &ctx.snapshot,
        config: &ctx.config,
        policies: &ctx.policies,
        index,
        ca: &facts,
        now,
        no_state: false,
    })
    .map_err(|e| RunError::NeedsHuman(e.0))
}

/// Completes or abandons the intents an interrupted run left behind, one intent object (one
/// round) at a time: certificates already recorded are indexed, intents whose request is
/// unchanged in the reviewed commit, and whose recorded TBS its profile still passes, are signed
/// as recorded (same serial and TBS), and the others are moved to `abandoned/` unsigned. The
/// object is deleted once the index holds its certificates, so a crash during recovery is
/// recovered again.
async fn recover(
    ctx: &Context,
    signer: &dyn Signer,
    issuer: &Issuer,
    h: &mut IndexHandle,
    now: OffsetDateTime,
    lease: &LeaseGuard,
    crl_only: bool,
) -> Result<(Vec<Issued>, usize, usize), RunError> {
    let keys = ctx.store.list("intents").await?;
    if keys.is_empty() {
        return Ok((vec![], 0, 0));
    }
    let prelim = match make_plan(ctx, &h.index, now) {
        Ok(plan) => plan,
        // `gitca crl` on a commit that does not plan: the intents wait for an apply.
        Err(e) if crl_only => {
            tracing::warn!("{e}; the interrupted run's intents are left for apply");
            return Ok((vec![], 0, 0));
        }
        Err(e) => return Err(e),
    };
    // What the reviewed commit would issue, by request (one lookup per intent, not a scan).
    let specs: std::collections::HashMap<&str, &IssueSpec> = prelim
        .requests
        .iter()
        .filter_map(|r| Some((r.id.as_str(), r.spec.as_deref()?)))
        .collect();
    let (mut recovered, mut abandoned, mut signatures) = (Vec::new(), 0, 0);
    // One buffer for every round object written again.
    let mut json = Vec::new();
    for key in keys {
        let Some(v) = ctx.store.get(&key).await? else {
            continue;
        };
        let intents = intents_of(&v.bytes).map_err(|e| format!("{key}: corrupt intent: {e}"))?;
        // The round is named by its first serial, as its intent object is.
        let round: Arc<str> = intents.first().map_or("", |r| r.serial.as_str()).into();
        let open: Vec<CertRecord> = intents
            .into_iter()
            .filter(|rec| !h.index.certs.contains_key(&rec.serial))
            .collect();
        // Records already written: in the round's object, or (by a gitca from before rounds)
        // one object each.
        let rkey = round_key(&round);
        let written = match open.is_empty() {
            true => None,
            false => ctx.store.get(&rkey).await?,
        };
        let in_round = match &written {
            Some(w) => records_of(&w.bytes).map_err(|e| format!("{rkey}: corrupt records: {e}"))?,
            None => Vec::new(),
        };
        let by_serial: std::collections::HashMap<&str, &CertRecord> =
            in_round.iter().map(|r| (r.serial.as_str(), r)).collect();
        let mut done: Vec<(CertRecord, Option<&Arc<str>>)> = Vec::new();
        let mut unrecorded = Vec::new();
        for rec in open {
            match by_serial.get(rec.serial.as_str()) {
                Some(r) => done.push(((*r).clone(), Some(&round))),
                None => unrecorded.push(rec),
            }
        }
        let open = unrecorded;
        let record_keys: Vec<String> = open.iter().map(|r| record_key(&r.serial)).collect();
        let stored = ctx.store.get_many(&record_keys).await;
        let mut to_sign = Vec::new();
        for ((rec, got), rkey) in open.into_iter().zip(stored).zip(&record_keys) {
            if let Some(r) = got? {
                let r = serde_json::from_slice::<CertRecord>(&r.bytes)
                    .map_err(|e| format!("{rkey}: corrupt record: {e}"))?;
                done.push((r, None));
                continue;
            }
            let unchanged = specs
                .get(rec.request_id.as_str())
                .filter(|s| s.request_hash == rec.request_hash);
            // Signed only as the reviewed commit would issue it: the same request, and a TBS
            // today's profile passes. A policy or configuration changed since the crash (a
            // lifetime, a usage) makes another certificate: the request is planned again.
            let to_complete = match unchanged {
                Some(spec) => {
                    let which = |e: String| format!("{key}: serial {}: {e}", rec.serial);
                    let tbs = Base64::decode_vec(&rec.tbs).map_err(|e| which(e.to_string()))?;
                    let serial = hex::decode(&rec.serial).map_err(|e| which(e.to_string()))?;
                    let current = profile::recheck_intent(
                        &tbs,
                        (issuer, &serial, spec),
                        &urls(ctx),
                        ctx.config.issuance.renew_before.as_time(),
                        now,
                    );
                    match current {
                        Ok(()) => Some(tbs),
                        Err(e) => {
                            tracing::warn!(
                                "{}; dropped unsigned, the request is planned again",
                                which(e)
                            );
                            None
                        }
                    }
                }
                None => None,
            };
            match to_complete {
                Some(tbs) => to_sign.push((rec, tbs)),
                None => {
                    let bytes = serde_json::to_vec(&rec).map_err(|e| e.to_string())?;
                    let kept = format!("abandoned/{}.json", rec.serial);
                    // Kept for the record before its intent is deleted; already there is fine.
                    match ctx.store.create(&kept, &bytes).await {
                        Ok(()) | Err(StoreError::Conflict(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                    abandoned += 1;
                }
            }
        }
        lease.check(&format!("completing the intents {key}"))?;
        let tbs: Vec<&[u8]> = to_sign.iter().map(|(_, t)| t.as_slice()).collect();
        let sigs = sign_all(signer, &tbs, &|| {}).await;
        let (with_sigs, failed) = signed_and_first_failure(to_sign, sigs);
        let mut signed = Vec::with_capacity(with_sigs.len());
        for ((mut rec, tbs), sig) in with_sigs {
            let der = profile::assemble_from_tbs(&tbs, &signer.algorithm(), &sig)
                .map_err(|e| format!("{key}: serial {}: {e}", rec.serial))?;
            signatures += 1;
            rec.certificate = Some(der_base64(&der));
            signed.push(rec);
        }
        // The round's object keeps what it holds and gains the new records.
        let previous = written.as_ref().map(|w| w.version.as_str());
        put_round(
            ctx.store.as_ref(),
            &round,
            previous,
            in_round.iter().chain(&signed),
            &mut json,
        )
        .await?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        done.extend(signed.into_iter().map(|r| (r, Some(&round))));
        let summaries = done
            .iter()
            .map(|(r, round)| Ok((r.serial.clone(), summary_of(r, *round)?)))
            .collect::<Result<Vec<_>, String>>()?;
        if !summaries.is_empty() {
            h.update(|i| index_certs(i, &summaries)).await?;
        }
        // Announced as issued by this run: the interrupted one sent no event for them.
        recovered.extend(summaries.into_iter().map(|(serial, c)| Issued {
            request_id: c.request_id,
            serial,
            action: Action::Issue,
            not_after: c.not_after,
        }));
        ctx.store.delete_if(&key, &v.version).await?;
    }
    if !recovered.is_empty() || abandoned > 0 {
        tracing::warn!(
            recovered = recovered.len(),
            abandoned,
            "finished the work of an interrupted apply"
        );
    }
    Ok((recovered, abandoned, signatures))
}

/// Writes a round's records as its one object: create-only, or (`previous`: the version read)
/// by compare-and-swap. A conflict is retryable: the rerun's recovery reads what landed and
/// keeps it, so a record once written is never replaced by another signature.
/// `buf` is the JSON's buffer, reused from one round to the next.
async fn put_round<'a>(
    store: &dyn crate::adapters::state_store::StateStore,
    round: &str,
    previous: Option<&str>,
    recs: impl Iterator<Item = &'a CertRecord>,
    buf: &mut Vec<u8>,
) -> Result<(), RunError> {
    let recs: Vec<&CertRecord> = recs.collect();
    if recs.is_empty() {
        return Ok(());
    }
    records_json_into(buf, &recs).map_err(|e| e.to_string())?;
    let key = round_key(round);
    match previous {
        None => store.create(&key, buf).await?,
        Some(v) => store.put_if(&key, buf, v).await.map(drop)?,
    };
    Ok(())
}

/// One reconcile of the commit in `ctx`. Idempotent: a second run on the same commit and state
/// signs nothing and commits nothing.
pub async fn reconcile(
    ctx: &mut Context,
    signer: &dyn Signer,
    opts: &ApplyOptions,
    lease: &LeaseGuard,
) -> Result<ApplyOutcome, RunError> {
    let phase = std::time::Instant::now();
    let head = ctx.snapshot.commit.clone();
    let now = opts
        .now
        .unwrap_or_else(OffsetDateTime::now_utc)
        .replace_nanosecond(0)
        .map_err(|e| e.to_string())?;
    let mut issuer = ctx.issuer()?;
    issuer.algorithm = signer.algorithm();
    let mut h = IndexHandle::open_from(
        ctx.store.clone(),
        ctx.ca_facts().key_id,
        ctx.index_at_load.lock().ok().and_then(|mut i| i.take()),
    )
    .await?;

    // A commit is new unless it is the last reconciled one or gitca's own outputs commit on it.
    let new_commit = match &h.index.last_reconciled {
        None => true,
        Some(last) => {
            last != &head
                && !ctx
                    .repo
                    .commit_message(&head)?
                    .contains(&format!("Gitca-Source-Commit: {last}"))
        }
    };
    let rewritten = match &h.index.last_reconciled {
        Some(last) => !ctx.repo.descends_from(&head, last)?,
        None => false,
    };
    if rewritten && !opts.allow_history_rewrite {
        let last = h.index.last_reconciled.clone().unwrap_or_default();
        return Err(RunError::NeedsHuman(format!(
            "HEAD {head} does not descend from the last reconciled commit {last}: history was rewritten. \
             Check what changed, then run apply with --allow-history-rewrite"
        )));
    }

    let (recovered_certs, abandoned, mut signatures) =
        recover(ctx, signer, &issuer, &mut h, now, lease, opts.crl_only).await?;
    let recovered = recovered_certs.len();
    let mut plan_error = None;
    let mut plan = match make_plan(ctx, &h.index, now) {
        Ok(plan) => plan,
        // A commit that does not plan (a revocation file that does not parse, a published
        // entry edited) must not let the CRL expire under every relying party: `gitca crl`
        // signs it from the state alone, writes nothing but the CRL, and reports the error.
        Err(e) if opts.crl_only => {
            tracing::error!("{e}; the CRL is refreshed from the state alone");
            plan_error = Some(e.to_string());
            Plan {
                commit: head.clone(),
                ..Plan::default()
            }
        }
        Err(e) => return Err(e),
    };
    // Planned: the request files are not read again (the outputs come from the state), and a
    // first issuance of 100,000 requests would hold them, about 140 MB, to its end. Freed on
    // another thread: 20,000 files took 10 ms here, with the other core idle.
    super::free_in_background(std::mem::take(&mut ctx.snapshot.files));
    let ctx = &*ctx;
    let mut basis_seen = ctx.basis_at_load.clone();
    if plan.has_changes() || recovered + abandoned > 0 {
        // The state is about to change: until this run records a new basis, the old one must
        // not vouch for the outputs (a run failing before its commit would leave them behind).
        forget_basis(ctx, &mut basis_seen).await?;
    }
    tracing::debug!(elapsed = ?phase.elapsed(), "planned");

    // Issue: intent, sign, record. The index points at the new certificates in the write below.
    let IssueRun {
        issued,
        certificates: fresh,
        summaries,
        intents_done,
        sign_seconds,
    } = match opts.crl_only {
        true => IssueRun::default(),
        false => issue(ctx, signer, opts, &issuer, &mut plan, lease).await?,
    };
    let fresh = outputs::FreshPems::encode_beside(fresh, opts.pem_beside);
    signatures += issued.len();

    // Revocations, orphans, CRL.
    let mut revoked = Vec::new();
    let mut marks: Vec<(String, Revoked)> = Vec::new();
    let mut published: Vec<(String, PublishedRevocation)> = Vec::new();
    let mut previous: Vec<(String, PreviousCaRevocation)> = Vec::new();
    if !opts.crl_only {
        for r in plan
            .revocations
            .iter()
            .filter(|r| r.action == RevocationAction::Revoke)
        {
            let e = r.parsed.as_ref().expect("planned revocation is parsed");
            let date = r.date.unwrap_or(now);
            for s in &r.serials {
                let revoked = Revoked {
                    reason: e.reason,
                    date,
                    by: e.key.clone(),
                };
                if r.previous_ca && !h.index.certs.contains_key(s) {
                    // Issued before gitca took over the key: at most the previous CA's
                    // maximum lifetime from now.
                    let days = ctx
                        .config
                        .serverless
                        .as_ref()
                        .map_or(0, |c| c.max_lifetime_days);
                    let keep_until = now + time::Duration::days(days as i64);
                    previous.push((
                        s.clone(),
                        PreviousCaRevocation {
                            revoked,
                            keep_until,
                        },
                    ));
                } else {
                    marks.push((s.clone(), revoked));
                }
            }
            published.push((
                e.key.clone(),
                PublishedRevocation {
                    reason: e.reason,
                    written_date: e.date,
                    file: e.file.clone(),
                    serials: r.serials.clone(),
                },
            ));
        }
        for r in &plan.requests {
            for s in &r.supersede {
                marks.push((
                    s.clone(),
                    Revoked {
                        reason: Reason::Superseded,
                        date: now,
                        by: format!("superseded:{}", r.id),
                    },
                ));
            }
        }
        for o in plan.orphans.iter().filter(|o| o.revoke) {
            for s in &o.serials {
                marks.push((
                    s.clone(),
                    Revoked {
                        reason: Reason::CessationOfOperation,
                        date: now,
                        by: format!("orphan:{}", o.request_id),
                    },
                ));
            }
        }
        revoked = marks
            .iter()
            .map(|(s, _)| s.clone())
            .chain(previous.iter().map(|(s, _)| s.clone()))
            .collect();
    }
    let lifetime = ctx.config.crl.lifetime.as_time();
    let overlap = ctx.config.crl.overlap.as_time();
    let revoking = !marks.is_empty() || !published.is_empty() || !previous.is_empty();
    // With revocations the index changes anyway; whether the CRL is due is decided on the
    // marked index inside the update (no copy of the whole index just to ask).
    let mut crl_is_due = opts.force_crl || (!revoking && crl_due(&h.index, now, lifetime, overlap));
    // No relying party takes a CRL its expired issuer signed: a new CA is due, not a CRL.
    // Refused before the state reserves a CRL number or records a revocation.
    if (crl_is_due || revoking) && now >= issuer.not_after {
        return Err(RunError::NeedsHuman(format!(
            "the CA certificate {} expired at {}: no CRL is signed with it; issue a new CA",
            ctx.config.ca.certificate,
            super::render::rfc3339(issuer.not_after)
        )));
    }
    // An accepted rewrite moves the reconciled commit onto the new history.
    let changed = !issued.is_empty() || revoking || crl_is_due || rewritten;
    let mut crl_number = None;
    let mut fresh = Some(fresh);
    let run = OutputInputs {
        issued: &issued,
        revoked: &revoked,
        recovered,
        planned: plan_error.is_none(),
    };
    // Set once the outputs are computed: the commit under way, if they changed anything.
    let mut outputs: Option<Option<PendingCommit>> = None;
    if changed {
        // One write: the new certificates, the revocations (a reissue supersedes atomically),
        // the reconciled commit and the CRL number. The 100,000-certificate index is 33 MB.
        let due = std::cell::Cell::new(crl_is_due);
        let change = |i: &mut Index| {
            index_certs(i, &summaries);
            // A raised reason changes no serial of the CRL, but what it says of one.
            let raised = apply_marks(i, &marks, &published, &previous);
            // `gitca crl` reconciles no commit: its requests and revocations are the next
            // apply's (and so are its events).
            if !opts.crl_only {
                i.last_reconciled = Some(head.clone());
            }
            due.set(opts.force_crl || raised || crl_due(i, now, lifetime, overlap));
            if due.get() {
                i.crl_number += 1;
            }
        };
        h.stage(&change);
        // With no CRL to sign or publish, this write is the run's last state change before its
        // commit: the outputs come from the staged index, and git updates its index (a quarter
        // of a second at 100,000 requests) while the state is written. Should the write fail,
        // the commit under way is dropped, which waits for git and leaves the branch.
        if !due.get() && !publication_pending(ctx, &h.index) {
            let fresh = fresh.take().unwrap_or_default();
            outputs = Some(start_outputs(ctx, opts, &h.index, &plan, &run, None, fresh).await?);
        }
        lease.check("the state index write")?;
        if h.write_staged(&change).await? == Staged::Reapplied {
            // Another writer changed the index the outputs came from.
            if let Some(Some(_)) = outputs {
                return Err(RunError::Retryable(
                    "the state index moved while this run committed its outputs; the state is \
                     saved, run apply again"
                        .into(),
                ));
            }
            outputs = None;
        }
        crl_is_due = due.get();
        tracing::debug!(elapsed = ?phase.elapsed(), "index updated");
    }
    fail(opts, FailPoint::AfterState).await?;
    for r in ctx.store.delete_many(&intents_done).await {
        r?;
    }
    drop((summaries, intents_done));
    if crl_is_due {
        let number = h.index.crl_number;
        let entries: Vec<CrlEntry> = h
            .index
            .crl_serials(now, lifetime)
            .into_iter()
            .map(|s| {
                let r = h
                    .index
                    .revocation_of(&s)
                    .cloned()
                    .expect("CRL serials are revoked");
                CrlEntry {
                    serial_hex: s,
                    date: r.date,
                    reason: r.reason,
                }
            })
            .collect();
        let next_update = now + lifetime;
        let backdate = ctx.config.issuance.backdate.as_time();
        let this_update = crl::this_update(now, backdate, &entries);
        let tbs = crl::tbs(&issuer, number, this_update, next_update, &entries)?;
        let sig = sign_verified(signer, &tbs).await?;
        signatures += 1;
        let der = crl::assemble(&tbs, &signer.algorithm(), &sig)?;
        match ctx.store.create(&crl_key(number), &der).await {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let serials: Vec<String> = entries.iter().map(|e| e.serial_hex.clone()).collect();
        let record_crl = |i: &mut Index| {
            if i.crl.as_ref().is_none_or(|c| c.number < number) {
                i.crl = Some(CrlInfo {
                    number,
                    this_update,
                    next_update,
                    serials: serials.clone(),
                });
            }
        };
        // Known to change the index this run read, whose CRL number it took: staged, without
        // the copy and comparison of `update` (a few milliseconds at 10,000 certificates, one
        // core). After a lost race the change is compared, and one a newer CRL made moot is
        // not written.
        h.stage(&record_crl);
        h.write_staged(&record_crl).await?;
        crl_number = Some(number);
        fail(opts, FailPoint::AfterCrl).await?;
    }

    // Publication of the CA certificates and the newest CRL, once per CRL number.
    let mut published = Vec::new();
    if let (Some(loc), Some(crl)) = (&ctx.config.publish.s3, h.index.crl.clone())
        && crl.number > h.index.published_crl_number
    {
        let der = ctx
            .store
            .get(&crl_key(crl.number))
            .await?
            .ok_or_else(|| {
                format!(
                    "CRL number {} is missing in {}",
                    crl.number,
                    ctx.store.describe()
                )
            })?
            .bytes;
        let mut certs = vec![(
            format!("{}.crt", ctx.config.ca.name),
            ctx.ca_cert.to_der().map_err(|e| e.to_string())?,
        )];
        for (n, c) in ctx.chain.iter().enumerate() {
            certs.push((
                format!("{}-chain-{n}.crt", ctx.config.ca.name),
                c.to_der().map_err(|e| e.to_string())?,
            ));
        }
        let bundle = outputs::ca_pems(ctx)?;
        let p = crate::adapters::publish::Publisher::open(loc)
            .await
            .publish(&ctx.config.ca.name, &certs, bundle.as_bytes(), &der)
            .await
            .map_err(|(class, e)| match class {
                // A missing bucket or denied access is no one's to retry away.
                ErrorClass::Fatal | ErrorClass::NotFound => RunError::NeedsHuman(e),
                ErrorClass::Retryable | ErrorClass::Conflict => RunError::Retryable(e),
            })?;
        published = p.objects;
        let number = crl.number;
        h.update(|i| i.published_crl_number = i.published_crl_number.max(number))
            .await?;
    }

    // Outputs and the commit, unless under way already.
    let pending = match outputs {
        Some(started) => started,
        None => {
            let fresh = fresh.take().unwrap_or_default();
            start_outputs(ctx, opts, &h.index, &plan, &run, crl_number, fresh).await?
        }
    };
    // The basis is recorded while git updates its index on another core (a quarter of a second
    // at 100,000 requests). Should the branch then not move, the basis names an output tree the
    // branch does not have, and the next run computes every output again.
    if !opts.crl_only && ctx.config.serverless.is_none() {
        let written = pending.as_ref().map(PendingCommit::id);
        match ctx
            .repo
            .folder_id(written.as_deref().unwrap_or(&head), &ctx.config.output.dir)
        {
            Ok(outputs_tree) => record_basis(ctx, &head, outputs_tree, &plan, basis_seen).await,
            Err(e) => tracing::warn!(
                "the plan basis was not recorded ({e}); the next run plans every request"
            ),
        }
    }
    tracing::debug!(elapsed = ?phase.elapsed(), "outputs commit written, basis recorded");
    let commit = pending
        .map(|p| ctx.repo.finish_outputs_commit(p))
        .transpose()?;
    let reconciled = new_commit && !opts.crl_only;
    // Without a plan no request is known: expiry thresholds would be consumed unsent.
    let events = match plan_error {
        None => {
            let issued_now: Vec<&Issued> = recovered_certs.iter().chain(&issued).collect();
            send_events(
                ctx,
                opts,
                &mut h,
                &plan,
                &issued_now,
                &revoked,
                reconciled,
                now,
            )
            .await
        }
        Some(_) => 0,
    };
    tracing::debug!(elapsed = ?phase.elapsed(), "committed, basis recorded, events sent");
    let did_nothing = issued.is_empty()
        && revoked.is_empty()
        && crl_number.is_none()
        && commit.is_none()
        && recovered + abandoned == 0
        && published.is_empty()
        && events == 0
        && !rewritten
        // Events a channel did not take are sent again by the next run, which must not be quiet.
        && h.index.undelivered_events.is_empty();
    if did_nothing && plan_error.is_none() {
        super::quiet::record(ctx, opts, &h, &plan, now).await;
    }
    super::free_in_background(std::mem::take(&mut h.index));
    let planned = plan.requests.len();
    Ok(ApplyOutcome {
        plan,
        issued,
        revoked,
        crl_number,
        commit,
        pushed: false,
        recovered,
        abandoned,
        signatures,
        signer: SignerStats::default(),
        published,
        seconds: 0.0,
        sign_seconds,
        events,
        plan_error,
        scan: ScanSummary {
            kind: match &ctx.scan {
                Scan::Incremental { .. } => "incremental",
                _ => "full",
            },
            read: planned - ctx.snapshot.carried.len(),
            carried: ctx.snapshot.carried.len(),
            reason: match &ctx.scan {
                Scan::Full { reason } => reason.clone(),
                _ => None,
            },
        },
    })
}

/// What a run changed, for its outputs and commit message.
struct OutputInputs<'a> {
    issued: &'a [Issued],
    revoked: &'a [String],
    recovered: usize,
    /// False: no plan (see [`ApplyOutcome::plan_error`]); no request's outputs are touched.
    planned: bool,
}

/// Computes the changes to the output folder from `index` and, if there are any, starts their
/// commit (see [`crate::adapters::git::GitRepo::start_outputs_commit`]).
async fn start_outputs(
    ctx: &Context,
    opts: &ApplyOptions,
    index: &Index,
    plan: &Plan,
    run: &OutputInputs<'_>,
    crl_number: Option<u64>,
    fresh: outputs::FreshPems,
) -> Result<Option<PendingCommit>, RunError> {
    let head = &ctx.snapshot.commit;
    let only = match &ctx.scan {
        _ if !run.planned => Some(std::collections::BTreeSet::new()),
        // The output folder is as the last reconcile left it: only what this run changed.
        Scan::Incremental {
            deleted,
            outputs_tree,
            ..
        } if run.recovered == 0
            && *outputs_tree == ctx.repo.folder_id(head, &ctx.config.output.dir)?
            // A deleted request whose outputs a present one shares (`a.yml` or `a.chain.yaml`
            // deleted beside `a.yaml`): its files are that one's, so every output is computed.
            && !plan.shares_outputs_with(deleted) =>
        {
            let mut ids = deleted.clone();
            ids.extend(run.issued.iter().map(|i| i.request_id.clone()));
            ids.extend(
                run.revoked
                    .iter()
                    .filter_map(|s| index.certs.get(s).map(|c| c.request_id.clone())),
            );
            Some(ids)
        }
        _ => None,
    };
    let present = match &only {
        Some(ids) => plan.present_among(ids),
        None => plan.request_set(),
    };
    let withheld = plan.withheld_outputs();
    let outputs = outputs::Wanted {
        present: &present,
        only: only.as_ref(),
        withheld: &withheld,
    };
    let changes = outputs::changes(ctx, head, index, outputs, fresh).await?;
    tracing::debug!("outputs computed");
    fail(opts, FailPoint::AfterOutputs).await?;
    fail(opts, FailPoint::BeforeCommit).await?;
    if changes.is_empty() {
        return Ok(None);
    }
    let msg = commit_message(head, run.issued, run.revoked, crl_number, &changes, ctx);
    Ok(ctx.repo.start_outputs_commit(head, &changes, &msg)?)
}

/// A CRL is signed but not yet published where the configuration publishes.
fn publication_pending(ctx: &Context, index: &Index) -> bool {
    ctx.config.publish.s3.is_some()
        && index
            .crl
            .as_ref()
            .is_some_and(|c| c.number > index.published_crl_number)
}

/// Requests signed per round of intents, signatures and records: bounds the memory of a large
/// first issuance (about 5 KB per certificate in flight; while a round is signed, the round
/// before's records and the round after's intents are written: a first issuance of 100,000
/// peaked at 432 MiB, 413 MiB before the intents were written beside) while keeping one
/// durable-write barrier per round.
pub const ISSUE_CHUNK: usize = 4096;

/// An issuance of at most this many rounds keeps every certificate the check before its first
/// intent built (about 2.7 KB each, 33 MB at most), so a first issuance of 10,000 builds each
/// once. A larger one keeps only the first round's and builds the others again: a first
/// issuance of 100,000 that kept three rounds peaked at 480 MiB, against 445 MiB.
const KEPT_ROUNDS: usize = 3;

/// Certificates this run signed, DER by serial: the outputs use them instead of reading each
/// record back from the state (one GET per certificate on S3).
pub type FreshCertificates = std::collections::HashMap<String, Vec<u8>>;

#[derive(Default)]
struct IssueRun {
    issued: Vec<Issued>,
    certificates: FreshCertificates,
    /// The index entries of the new certificates, for the run's index update.
    summaries: Vec<(String, CertSummary)>,
    /// The intent objects (one per round) to delete once the index points at the
    /// certificates: (key, version).
    intents_done: Vec<(String, String)>,
    sign_seconds: f64,
}

/// Issues every certificate the plan asks for, in rounds of `ISSUE_CHUNK`: build and lint the
/// TBS (all cores), record the intents durably, sign, record the certificates. The caller
/// points the index at them (with the run's other changes, in one write), then deletes the
/// intents; a crash in between leaves intents that `recover` completes. Each round takes its
/// specs out of the plan (keys, names, extensions: about 1.5 KB a request), so they are not all
/// held to the end.
async fn issue(
    ctx: &Context,
    signer: &dyn Signer,
    opts: &ApplyOptions,
    issuer: &Issuer,
    plan: &mut Plan,
    lease: &LeaseGuard,
) -> Result<IssueRun, RunError> {
    let phase = std::time::Instant::now();
    let urls = urls(ctx);
    let to_issue: Vec<usize> = plan.to_issue_indices().collect();
    let progress = Progress::new(to_issue.len());
    let mut run = IssueRun {
        issued: Vec::with_capacity(to_issue.len()),
        certificates: FreshCertificates::with_capacity(to_issue.len()),
        summaries: Vec::with_capacity(to_issue.len()),
        intents_done: Vec::new(),
        sign_seconds: 0.0,
    };
    // Nothing to sign (most runs): no CA key to parse for a verifier.
    if to_issue.is_empty() {
        return Ok(run);
    }
    let build = |spec: &IssueSpec, serial: [u8; 20]| -> Result<_, String> {
        let unsigned = profile::leaf(spec, issuer, &serial, spec.not_before, &urls)
            .map_err(|e| format!("{}: cannot build the certificate: {e}", spec.request_id))?;
        profile::lint_leaf(&unsigned.tbs_der, issuer, &serial, spec).map_err(|e| {
            format!(
                "{}: certificate fails the profile check: {e}",
                spec.request_id
            )
        })?;
        let rec = CertRecord {
            serial: base16ct::lower::encode_string(&serial),
            request_id: spec.request_id.clone(),
            request_hash: spec.request_hash.clone(),
            key_id: spec.key_id.clone(),
            tbs: der_base64(&unsigned.tbs_der),
            certificate: None,
        };
        Ok((unsigned, rec))
    };
    // Buffers of about 6 MB a round: the intents', the records written inline, and the records
    // written beside the next round.
    let mut intents_json = Vec::new();
    let mut json = Vec::new();
    let mut spare_json = Vec::new();
    // The round whose records are being written, if any.
    let mut recording: Option<Recording> = None;
    // The CA key parsed, and its tables made, once for every round.
    let verifier = verifier_of(signer, to_issue.len());
    let chunk_size = opts.issue_chunk.max(1);
    // Every certificate is built and checked before the first intent, so a request that cannot
    // be issued stops the run before anything is signed; the rounds only bound memory. Past
    // `KEPT_ROUNDS`, only the first round's are kept; later rounds build theirs again, with
    // fresh serials (a tenth of a second per 10,000), rather than hold every one.
    let rounds = to_issue.len().div_ceil(chunk_size);
    let kept_rounds = if rounds <= KEPT_ROUNDS { rounds } else { 1 };
    let mut kept = {
        use rayon::prelude::*;
        let requests = &plan.requests;
        let build_at = |(&i, serial): (&usize, [u8; 20])| {
            let spec = requests[i].spec.as_deref();
            build(spec.expect("planned issuance has a spec"), serial)
        };
        let held = chunk_size.saturating_mul(kept_rounds).min(to_issue.len());
        let (ahead, rest) = to_issue.split_at(held);
        let serials = new_serials(to_issue.len())?;
        let (ahead_serials, rest_serials) = serials.split_at(held);
        rest.par_iter()
            .zip(rest_serials.par_iter().copied())
            .try_for_each(|x| build_at(x).map(drop))?;
        ahead
            .par_iter()
            .zip(ahead_serials.par_iter().copied())
            .map(build_at)
            .collect::<Result<Vec<_>, String>>()?
            .into_iter()
    };
    // Round `k`'s certificates, built and checked: taken from those built above, or built now.
    let mut prepare = |chunk: &[usize], round: usize| -> Result<Built, RunError> {
        let specs: Vec<(Action, Box<IssueSpec>)> = chunk
            .iter()
            .map(|&i| {
                let r = &mut plan.requests[i];
                let spec = r.spec.take().expect("planned issuance has a spec");
                (r.action, spec)
            })
            .collect();
        let built: Built = if round < kept_rounds {
            let actions = specs.iter().map(|(action, _)| *action);
            actions.zip(kept.by_ref().take(specs.len())).collect()
        } else {
            use rayon::prelude::*;
            specs
                .par_iter()
                .zip(new_serials(specs.len())?)
                .map(|((action, spec), serial)| Ok((*action, build(spec, serial)?)))
                .collect::<Result<_, String>>()?
        };
        // 4-5 ms a round of 4,096, with the other core idle.
        super::free_in_background(specs);
        tracing::debug!(elapsed = ?phase.elapsed(), n = built.len(), "certificates built and linted");
        Ok(built)
    };
    let chunks: Vec<&[usize]> = to_issue.chunks(chunk_size).collect();
    // The next round's intents, being written while this round is signed.
    let mut next_intents: Option<IntentsWrite> = None;
    let rounds_done = async {
        for (round, &chunk) in chunks.iter().enumerate() {
            // The fail points after a step stop the last round: earlier rounds are then recorded
            // but not indexed, the state a crash mid-issuance leaves. Those beside a step stop
            // the write of an earlier round's records or a later round's intents.
            let last = round + 1 == rounds;
            // Every intent of the round is durable before any of it is signed: one object.
            let (built, intents) = match next_intents.take() {
                Some(writing) => {
                    let (written, built, buf) = joined(writing.await)?;
                    intents_json = buf;
                    (built, written?)
                }
                None => {
                    let built = prepare(chunk, round)?;
                    let written =
                        write_intents(ctx.store.as_ref(), &built, &mut intents_json, lease);
                    let intents = written.await?;
                    (built, intents)
                }
            };
            run.intents_done.push(intents);
            if last {
                fail(opts, FailPoint::AfterIntent).await?;
            }
            tracing::debug!(elapsed = ?phase.elapsed(), "intents recorded");
            // The round before, if its write has ended: one that failed stops the run here,
            // before this round's signatures and the next round's intents.
            if recording.as_ref().is_some_and(|r| r.is_finished()) {
                let previous = recording.take().expect("a recording");
                run.take(recorded(previous, &mut spare_json).await?);
            }
            // The next round's intents are written while this round is signed: one core's work
            // (the JSON's joining and the write) that left the other idle between rounds.
            if let Some(&next) = chunks.get(round + 1) {
                let built = prepare(next, round + 1)?;
                let store = ctx.store.clone();
                let mut buf = std::mem::take(&mut intents_json);
                let (fail_at, hang_at) = (opts.fail_at, opts.hang_at);
                let lease = lease.clone();
                next_intents = Some(tokio::spawn(async move {
                    let written = async {
                        fail_or_hang(fail_at, hang_at, FailPoint::BesideIntent).await?;
                        write_intents(store.as_ref(), &built, &mut buf, &lease).await
                    };
                    (written.await, built, buf)
                }));
            }
            let round: Arc<str> = built[0].1.1.serial.as_str().into();
            let tbs: Vec<&[u8]> = built
                .iter()
                .map(|(_, (u, _))| u.tbs_der.as_slice())
                .collect();
            let sign_started = std::time::Instant::now();
            let signatures = sign_all_with(signer, &verifier, &tbs, &|| progress.tick()).await;
            run.sign_seconds += sign_started.elapsed().as_secs_f64();
            let (with_sigs, failed) = signed_and_first_failure(built, signatures);
            // On all cores, as the signing was: a loop here left the other core idle every round.
            let signed: Vec<Signed> = {
                use rayon::prelude::*;
                with_sigs
                    .into_par_iter()
                    .map(|((action, (unsigned, mut rec)), sig)| {
                        let der = unsigned.assemble(&sig)?;
                        let summary = summary_from(&rec, &unsigned.validity, Some(&round));
                        rec.certificate = Some(der_base64(&der));
                        Ok((action, rec, der, summary))
                    })
                    .collect::<Result<_, String>>()?
            };
            if last {
                fail(opts, FailPoint::AfterSign).await?;
            }
            tracing::debug!(elapsed = ?phase.elapsed(), "signed");
            // Rounds are recorded in order: the one before first.
            let mut before_failed = None;
            if let Some(previous) = recording.take() {
                match recorded(previous, &mut spare_json).await {
                    Ok(before) => run.take(before),
                    Err(e) => before_failed = Some(e),
                }
            }
            if failed.is_some() || last || before_failed.is_some() {
                // Recorded even when another signature failed (KMS retries spent, say) or the
                // round before could not be. The last round's records are durable before
                // `issue` returns: the outputs may be committed next, and a certificate in git
                // must have its record.
                let records = signed.iter().map(|s| &s.1);
                let written = put_round(ctx.store.as_ref(), &round, None, records, &mut json).await;
                // The failed signature says the most (a disabled KMS key needs a human), then
                // the round before's write, then this one's; the others are logged.
                let errors = [failed.map(RunError::from), before_failed, written.err()];
                let mut errors = errors.into_iter().flatten();
                if let Some(first) = errors.next() {
                    for e in errors {
                        tracing::warn!("also: {e}");
                    }
                    return Err(first);
                }
                if last {
                    fail(opts, FailPoint::AfterRecord).await?;
                }
                run.take(signed);
                tracing::debug!(elapsed = ?phase.elapsed(), "records written");
            } else {
                // Written while the next round is built, recorded and signed: mostly one core's
                // work (the JSON's joining and the write), which left the other idle each round.
                let store = ctx.store.clone();
                let mut spare = std::mem::take(&mut spare_json);
                let (fail_at, hang_at) = (opts.fail_at, opts.hang_at);
                recording = Some(tokio::spawn(async move {
                    let written = async {
                        fail_or_hang(fail_at, hang_at, FailPoint::BesideRecord).await?;
                        let records = signed.iter().map(|s| &s.1);
                        put_round(store.as_ref(), &round, None, records, &mut spare).await
                    };
                    (written.await, signed, spare)
                }));
            }
        }
        Ok::<(), RunError>(())
    }
    .await;
    if let Some(previous) = recording.take() {
        // A round failed while the one before was being recorded: that write ends first, so
        // the rerun's recovery finds what it wrote.
        if let Err(e) = recorded(previous, &mut spare_json).await {
            tracing::warn!("also: {e}");
        }
    }
    if let Some(writing) = next_intents.take() {
        // Likewise the next round's intents: recovery completes them if they were written.
        if let Err(e) = joined(writing.await).and_then(|(written, _, _)| written) {
            tracing::warn!("also: {e}");
        }
    }
    rounds_done?;
    progress.finish();
    Ok(run)
}

/// A certificate signed in a round: its action, record (with the certificate), DER and index
/// entry.
type Signed = (Action, CertRecord, Vec<u8>, CertSummary);

/// A round's records written beside the next round: what came of the write, the round's
/// certificates, and the JSON buffer for the round after.
type Recording = tokio::task::JoinHandle<(Result<(), RunError>, Vec<Signed>, Vec<u8>)>;

/// Waits for a round's records; its certificates once they are written. The JSON buffer
/// comes back to `spare`.
async fn recorded(recording: Recording, spare: &mut Vec<u8>) -> Result<Vec<Signed>, RunError> {
    let (written, signed, json) = joined(recording.await)?;
    *spare = json;
    written.map(|()| signed)
}

/// What a task of `issue` returned; its panic goes on here.
fn joined<T>(ended: Result<T, tokio::task::JoinError>) -> Result<T, RunError> {
    ended.map_err(|e| match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        // Cancelled: the runtime is shutting down.
        Err(e) => RunError::Retryable(format!("a round's state write: {e}")),
    })
}

/// A round's certificates, built and checked before its intents: action, TBS and record.
type Built = Vec<(Action, (profile::Unsigned, CertRecord))>;

/// A round's intents written while the round before is signed: the key and version written,
/// the round, and the JSON buffer back.
type IntentsWrite = tokio::task::JoinHandle<(Result<(String, String), RunError>, Built, Vec<u8>)>;

/// Records a round's intents durably, as one object named by its first serial: its key and
/// version.
async fn write_intents(
    store: &dyn crate::adapters::state_store::StateStore,
    built: &Built,
    buf: &mut Vec<u8>,
    lease: &LeaseGuard,
) -> Result<(String, String), RunError> {
    let key = intent_key(&built[0].1.1.serial);
    // No new round while another apply may run: it would plan these requests too.
    lease.check(&format!("the intents {key}"))?;
    let records: Vec<&CertRecord> = built.iter().map(|(_, (_, rec))| rec).collect();
    records_json_into(buf, &records).map_err(|e| e.to_string())?;
    let version = store.put_new(&key, buf).await?;
    Ok((key, version))
}

impl IssueRun {
    /// Adds a round's certificates, recorded.
    fn take(&mut self, signed: Vec<Signed>) {
        for (action, rec, der, summary) in signed {
            self.issued.push(Issued {
                request_id: rec.request_id,
                serial: rec.serial.clone(),
                action,
                not_after: summary.not_after,
            });
            self.certificates.insert(rec.serial.clone(), der);
            self.summaries.push((rec.serial, summary));
        }
    }
}

/// Builds this run's events and sends them to the file, SNS and webhook configured, each after
/// what it failed to take before. A failed notification is logged, never fatal (the
/// certificates are issued and recorded by now), and its events are kept in the state for the
/// next apply: at least once, as a crash after sending and before the state write sends again.
#[allow(clippy::too_many_arguments)]
async fn send_events(
    ctx: &Context,
    opts: &ApplyOptions,
    h: &mut IndexHandle,
    plan: &Plan,
    issued: &[&Issued],
    revoked: &[String],
    new_commit: bool,
    now: OffsetDateTime,
) -> usize {
    use crate::domain::events::{self, Event, Kind};
    let cfg = &ctx.config.events;
    // With no channel, a backlog is still dropped below: kept, it would keep every run from
    // being quiet.
    if opts.events_file.is_none()
        && cfg.sns_topic_arn.is_none()
        && cfg.webhook_url.is_none()
        && h.index.undelivered_events.is_empty()
    {
        return 0;
    }
    let ca = ctx.config.ca.name.as_str();
    let mut out = Vec::new();
    for i in issued {
        let kind = match i.action {
            Action::Renew => Kind::Renewed,
            Action::Reissue => Kind::Reissued,
            _ => Kind::Issued,
        };
        let mut e = Event::new(kind, ca, now);
        e.request = Some(i.request_id.clone());
        e.serial = Some(i.serial.clone());
        e.not_after = Some(i.not_after);
        out.push(e);
    }
    // Rejections once per reviewed commit, not on every cron run.
    if new_commit {
        for r in plan
            .requests
            .iter()
            .filter(|r| r.action == Action::Rejected)
        {
            let mut e = Event::new(Kind::Rejected, ca, now);
            e.request = Some(r.id.clone());
            e.reasons = r.findings.clone();
            out.push(e);
        }
    }
    for s in revoked {
        let mut e = Event::new(Kind::Revoked, ca, now);
        e.serial = Some(s.clone());
        e.request = h.index.certs.get(s).map(|c| c.request_id.clone());
        out.push(e);
    }
    let requests = plan.request_ids();
    let since = h.index.events_checked_at.unwrap_or(now);
    out.extend(events::expiring(
        &h.index,
        &requests,
        &cfg.expiry_days,
        since,
        now,
        ca,
    ));
    let new: Vec<serde_json::Value> = (out.iter())
        .filter_map(|e| serde_json::to_value(e).ok())
        .collect();
    let mut undelivered = crate::domain::events::Undelivered::new();
    for channel in ["file", "sns", "webhook"] {
        let pending = events::to_send(&h.index.undelivered_events, channel, &new);
        let sent = match channel {
            _ if pending.is_empty() => continue,
            "file" => match &opts.events_file {
                Some(path) => crate::adapters::notify::write_jsonl(path, &pending),
                None => continue,
            },
            "sns" => match &cfg.sns_topic_arn {
                Some(topic) => {
                    crate::adapters::notify::publish_sns(topic, cfg.sns_region.as_deref(), &pending)
                        .await
                        .map(|_| ())
                }
                None => continue,
            },
            _ => match &cfg.webhook_url {
                Some(url) => crate::adapters::notify::post_webhook(url, &pending).await,
                None => continue,
            },
        };
        if let Err(e) = sent {
            let (kept, dropped) = events::bounded(pending);
            tracing::error!(
                error = %e,
                channel,
                kept = kept.len(),
                dropped,
                "could not send events; the next apply sends them again"
            );
            undelivered.insert(channel.to_string(), kept);
        }
    }
    // A channel no longer configured gets nothing more (its backlog is dropped with it).
    // A new commit with nothing to change is reconciled too: its rejections were reported.
    let head = &ctx.snapshot.commit;
    let checked = |i: &mut Index| {
        i.events_checked_at = Some(now);
        i.undelivered_events = undelivered.clone();
        if new_commit {
            i.last_reconciled = Some(head.clone());
        }
    };
    if let Err(e) = h.update(checked).await {
        tracing::warn!(error = %e, "could not record the events sent; events may repeat");
    }
    out.len()
}

/// Deletes the stored basis (`seen`: as the load saw it, None when unknown); after it, the
/// basis is known to be absent.
async fn forget_basis(ctx: &Context, seen: &mut Option<BasisSeen>) -> Result<(), RunError> {
    use crate::domain::incremental::BASIS_KEY;
    let version = match seen.take() {
        Some(known) => known.map(|(v, _)| v),
        None => ctx.store.get(BASIS_KEY).await?.map(|v| v.version),
    };
    if let Some(v) = version {
        match ctx.store.delete_if(BASIS_KEY, &v).await {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    *seen = Some(None);
    Ok(())
}

/// Records what this run planned for every request, for the next incremental reconcile. A
/// cache: a failure to write it costs the next run a full plan, nothing else.
async fn record_basis(
    ctx: &Context,
    head: &str,
    outputs_tree: Option<String>,
    plan: &Plan,
    seen: Option<BasisSeen>,
) {
    use crate::domain::incremental::{BASIS_KEY, Basis};
    let bytes = Basis::render_from(
        crate::domain::incremental::PLAN_RULES,
        head,
        outputs_tree.as_deref(),
        plan.requests
            .iter()
            .filter_map(|r| r.carry.as_ref().map(|c| (r.id.as_str(), c))),
    )
    .into_bytes();
    let digest = sha2::Sha256::digest(&bytes).to_vec();
    let seen = match seen {
        Some(known) => Ok(known),
        None => ctx
            .store
            .get(BASIS_KEY)
            .await
            .map(|v| v.map(|v| (v.version, sha2::Sha256::digest(&v.bytes).to_vec()))),
    };
    let written = match seen {
        Ok(Some((_, d))) if d == digest => Ok(String::new()),
        Ok(Some((v, _))) => ctx.store.put_if(BASIS_KEY, &bytes, &v).await,
        Ok(None) => ctx.store.put_new(BASIS_KEY, &bytes).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        tracing::warn!("the plan basis was not recorded ({e}); the next run plans every request");
    }
}

/// Points the index at new certificates; one already there is kept as it is.
fn index_certs(i: &mut Index, summaries: &[(String, CertSummary)]) {
    for (s, c) in summaries {
        if !i.certs.contains_key(s) {
            i.certs.insert(s.clone(), c.clone());
        }
    }
}

/// Pairs each item with its signature, keeping those that got one, and the first failure: what
/// was signed is recorded before the failure ends the run, so the rerun does not sign it again.
fn signed_and_first_failure<T>(
    items: Vec<T>,
    signatures: Vec<Result<Vec<u8>, SignError>>,
) -> (Vec<(T, Vec<u8>)>, Option<SignError>) {
    let mut signed = Vec::with_capacity(items.len());
    let mut failed = None;
    for (item, sig) in items.into_iter().zip(signatures) {
        match sig {
            Ok(sig) => signed.push((item, sig)),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    (signed, failed)
}

/// Marks the certificates revoked by this run in the index, and records its published
/// revocation entries and previous-CA serials. True when a reason was raised to key
/// compromise: the CRL's serials are the same, what it says of one is not.
fn apply_marks(
    i: &mut Index,
    marks: &[(String, Revoked)],
    published: &[(String, PublishedRevocation)],
    previous: &[(String, PreviousCaRevocation)],
) -> bool {
    for (s, p) in previous {
        i.previous_ca.entry(s.clone()).or_insert(p.clone());
    }
    let mut raised = false;
    for (s, r) in marks {
        // Looked up first: `get_mut` has the index object store the certificate again.
        let was = i
            .certs
            .get(s)
            .map(|c| c.revoked.as_ref().map(|w| (w.reason, w.date)));
        let revoked = match was {
            None => continue,
            Some(None) => r.clone(),
            // A reason raised to key compromise keeps the first revocation's date (the plan
            // lists a revoked certificate again only to raise it).
            Some(Some((reason, date)))
                if r.reason == Reason::KeyCompromise && reason != r.reason =>
            {
                raised = true;
                Revoked { date, ..r.clone() }
            }
            Some(Some(_)) => continue,
        };
        if let Some(c) = i.certs.get_mut(s) {
            c.revoked = Some(revoked);
        }
    }
    for (k, p) in published {
        i.revocations.entry(k.clone()).or_insert(p.clone());
    }
    raised
}

/// A CRL is due when none exists, the revoked set changed, or nextUpdate is within the overlap.
pub fn crl_due(
    i: &Index,
    now: OffsetDateTime,
    lifetime: time::Duration,
    overlap: time::Duration,
) -> bool {
    match &i.crl {
        None => true,
        // A number reserved and never signed: the run that reserved it stopped before its
        // CRL, which may have been to say something the serials alone do not (a raised reason).
        Some(c) => {
            c.serials != i.crl_serials(now, lifetime)
                || c.next_update - overlap <= now
                || i.crl_number > c.number
        }
    }
}

/// How many issued or revoked certificates a commit message lists by name.
const COMMIT_MESSAGE_LINES: usize = 200;

fn commit_message(
    source: &str,
    issued: &[Issued],
    revoked: &[String],
    crl: Option<u64>,
    changes: &std::collections::BTreeMap<String, Option<crate::adapters::git::Content>>,
    ctx: &Context,
) -> String {
    let mut subject = Vec::new();
    if !issued.is_empty() {
        subject.push(format!("issue {}", issued.len()));
    }
    if !revoked.is_empty() {
        subject.push(format!("revoke {}", revoked.len()));
    }
    if let Some(n) = crl {
        subject.push(format!("CRL {n}"));
    }
    if subject.is_empty() {
        subject.push("write outputs".into());
    }
    let mut m = format!("gitca: {}\n\n", subject.join(", "));
    // A bounded list: every run reads this commit back, and `git log` should stay readable
    // after a mass issuance; the state and `gitca status` hold the full list.
    let lines = issued
        .iter()
        .map(|i| format!("- {:?} {} serial {}\n", i.action, i.request_id, i.serial).to_lowercase())
        .chain(revoked.iter().map(|s| format!("- revoke serial {s}\n")));
    let total = issued.len() + revoked.len();
    for l in lines.take(COMMIT_MESSAGE_LINES) {
        m.push_str(&l);
    }
    if total > COMMIT_MESSAGE_LINES {
        m.push_str(&format!(
            "- and {} more (see `gitca status`)\n",
            total - COMMIT_MESSAGE_LINES
        ));
    }
    let removed = changes.values().filter(|v| v.is_none()).count();
    if removed > 0 {
        m.push_str(&format!(
            "- remove {removed} output file(s) of removed or revoked requests\n"
        ));
    }
    m.push_str(&format!(
        "\nGitca-Source-Commit: {source}\nGitca-State: {}\n",
        ctx.store.describe()
    ));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CRL number reserved and never signed (the run stopped between its index write and
    /// its CRL) makes the CRL due, though its serials and dates would not: that CRL may have
    /// been to raise a reason, which the serials do not show.
    #[test]
    fn a_crl_number_reserved_and_never_signed_makes_the_crl_due() {
        let now = time::macros::datetime!(2026-12-02 00:00 UTC);
        let day = time::Duration::days(1);
        let mut index = Index::new("ca".into());
        index.crl_number = 3;
        index.crl = Some(CrlInfo {
            number: 3,
            this_update: now - day,
            next_update: now + 6 * day,
            serials: vec![],
        });
        assert!(
            !crl_due(&index, now, 7 * day, 2 * day),
            "signed and current"
        );
        index.crl_number = 4;
        assert!(
            crl_due(&index, now, 7 * day, 2 * day),
            "4 reserved, 3 signed"
        );
    }

    #[test]
    fn the_signed_are_kept_with_their_signatures_and_the_first_failure_is_reported() {
        let sigs = vec![
            Ok(vec![1]),
            Err(SignError::Retryable("first".into())),
            Ok(vec![3]),
            Err(SignError::Fatal("second".into())),
        ];
        let (signed, failed) = signed_and_first_failure(vec!["a", "b", "c", "d"], sigs);
        assert_eq!(signed, vec![("a", vec![1]), ("c", vec![3])]);
        assert!(matches!(failed, Some(SignError::Retryable(m)) if m == "first"));
        let (signed, failed) = signed_and_first_failure(vec!["a"], vec![Ok(vec![1])]);
        assert_eq!(signed, vec![("a", vec![1])]);
        assert!(failed.is_none());
    }
}
