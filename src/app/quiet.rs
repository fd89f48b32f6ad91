//! The quiet path of `apply`: most cron runs find nothing to do. A run that found nothing to do
//! leaves a [`Quiet`] record; the next run on the same tree, against the same index version,
//! with no interrupted intents, before the record's deadline, has nothing to do either, and
//! ends after a handful of small reads instead of reading every request and the whole index.

use super::RunError;
use super::apply::{ApplyOptions, ApplyOutcome, ScanSummary};
use super::context::Context;
use super::index::IndexHandle;
use crate::domain::incremental::{QUIET_KEY, Quiet, quiet_until};
use crate::domain::plan::Plan;
use crate::domain::state::INDEX_KEY;
use time::OffsetDateTime;

/// The outcome of a run that the quiet record proves would do nothing, or None when it must
/// plan. `ctx` needs only the minimal load (config, CA certificate, store).
pub async fn check(
    ctx: &Context,
    opts: &ApplyOptions,
    now: OffsetDateTime,
) -> Result<Option<ApplyOutcome>, RunError> {
    if opts.full_scan || opts.force_crl || opts.fail_at.is_some() || opts.hang_at.is_some() {
        return Ok(None);
    }
    let Some(stored) = ctx.store.get(QUIET_KEY).await? else {
        return Ok(None);
    };
    let quiet = match Quiet::parse(&String::from_utf8_lossy(&stored.bytes)) {
        Ok(q) => q,
        Err(e) => {
            tracing::debug!(error = %e, "ignoring the quiet record");
            return Ok(None);
        }
    };
    // HEAD again: another apply in this clone may have committed while this one waited.
    let head = ctx.repo.resolve("HEAD")?;
    let why_not = if quiet.version != env!("CARGO_PKG_VERSION") {
        Some("written by another gitca version")
    } else if now >= quiet.until {
        Some("its deadline has passed")
    } else if now < quiet.at {
        Some("this run's time is before the run that wrote it")
    } else if opts.events_file.is_some() != quiet.events_file {
        Some("events go to a file in one run and not the other")
    } else if ctx.repo.tree_id(&head)? != quiet.tree {
        Some("the tree changed")
    } else if ctx.store.version(INDEX_KEY).await?.as_deref() != Some(&quiet.index_version) {
        Some("the state changed")
    } else if !ctx.store.list("intents/").await?.is_empty() {
        Some("an interrupted run left intents")
    } else if let Some(last) = &quiet.last_reconciled
        && !ctx.repo.descends_from(&head, last)?
    {
        Some("the history was rewritten")
    } else {
        None
    };
    if let Some(why) = why_not {
        tracing::debug!(reason = why, "planning: the quiet record does not apply");
        return Ok(None);
    }
    let mut pushed = false;
    if opts.push {
        // Outputs an earlier run committed may still be unpushed; a moved remote is the
        // planning path's business.
        if !ctx.repo.push()? {
            return Ok(None);
        }
        pushed = true;
    }
    tracing::info!(
        until = %super::render::rfc3339(quiet.until),
        "nothing changed since the last reconcile, which had nothing to do"
    );
    Ok(Some(ApplyOutcome {
        plan: Plan {
            commit: head,
            ..Default::default()
        },
        pushed,
        scan: ScanSummary {
            kind: "quiet",
            read: 0,
            carried: quiet.requests,
            reason: Some(format!(
                "nothing changed since the last reconcile, which had nothing to do; \
                 next planned run by {}",
                super::render::rfc3339(quiet.until)
            )),
        },
        ..Default::default()
    }))
}

/// After a run that did nothing: records until when the same tree and index stay quiet. A
/// cache: failing to write it costs the next run a plan, nothing else.
pub async fn record(
    ctx: &Context,
    opts: &ApplyOptions,
    h: &IndexHandle,
    plan: &Plan,
    now: OffsetDateTime,
) {
    let Some(until) = quiet_until(plan, &h.index, &ctx.config, &ctx.ca_facts(), now) else {
        return;
    };
    let written = async {
        let quiet = Quiet {
            version: env!("CARGO_PKG_VERSION").to_string(),
            tree: ctx.repo.tree_id(&plan.commit)?,
            index_version: h.version().to_string(),
            until,
            last_reconciled: h.index.last_reconciled.clone(),
            requests: plan.requests.len(),
            at: now,
            events_file: opts.events_file.is_some(),
        };
        let bytes = quiet.render().into_bytes();
        match ctx.store.version(QUIET_KEY).await? {
            Some(v) => ctx.store.put_if(QUIET_KEY, &bytes, &v).await?,
            None => ctx.store.put_new(QUIET_KEY, &bytes).await?,
        };
        Ok::<(), RunError>(())
    };
    if let Err(e) = written.await {
        tracing::warn!(error = %e, "the quiet record was not written; the next run plans");
    }
}
