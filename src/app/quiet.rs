//! The quiet path of `apply`: most cron runs find nothing to do. A run that found nothing to do
//! leaves a [`Quiet`] record; the next run on the same tree (or one changed only where no plan
//! reads), against the same index version, with no interrupted intents, before the record's
//! deadline, has nothing to do either, and ends after a handful of small reads instead of
//! reading every request and the whole index.

use super::RunError;
use super::apply::{ApplyOptions, ApplyOutcome, ScanSummary};
use super::context::Context;
use super::index::IndexHandle;
use crate::domain::incremental::{
    QUIET_KEY, Quiet, quiet_despite, quiet_until, reads_only_requests,
};
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
    let why_not = if quiet.version != crate::domain::incremental::PLAN_RULES {
        Some("written by another gitca build")
    } else if now >= quiet.until {
        Some("its deadline has passed")
    } else if now < quiet.at {
        Some("this run's time is before the run that wrote it")
    } else if opts.events_file.is_some() != quiet.events_file {
        Some("events go to a file in one run and not the other")
    } else if let Some(why) = changed_for_the_plan(ctx, &quiet, &head)? {
        Some(why)
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
        "nothing a plan reads changed since the last reconcile, which had nothing to do"
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
                "nothing a plan reads changed since the last reconcile, which had nothing to \
                 do; next planned run by {}",
                super::render::rfc3339(quiet.until)
            )),
        },
        ..Default::default()
    }))
}

/// Why the reviewed tree keeps the quiet record from applying, if it does: a change since the
/// tree it was written for that a plan reads or gitca writes (a README beside the requests
/// leaves the plan standing; see [`quiet_despite`]). The trees are compared by their changed
/// folders only, so the cost follows the change.
fn changed_for_the_plan(
    ctx: &Context,
    quiet: &Quiet,
    head: &str,
) -> Result<Option<&'static str>, RunError> {
    let tree = ctx.repo.tree_id(head)?;
    if tree == quiet.tree {
        return Ok(None);
    }
    if !quiet.reads_in_requests {
        return Ok(Some(
            "the tree changed, and its plan read a file outside requests/ (a CSR, or a request a revocation names)",
        ));
    }
    let changes = match ctx.repo.changed_between_trees(&quiet.tree, &tree) {
        Ok(changes) => changes,
        Err(e) => {
            tracing::debug!(error = %e, "cannot compare with the quiet record's tree");
            return Ok(Some("the tree changed"));
        }
    };
    Ok(match quiet_despite(&changes, &ctx.config) {
        Some(what) => {
            tracing::debug!(%what, "the tree changed where a plan reads or gitca writes");
            Some("the tree changed where a plan reads or gitca writes")
        }
        None => {
            tracing::debug!(
                changed = changes.len(),
                "the tree changed only where no plan reads"
            );
            None
        }
    })
}

/// Removes the quiet record after a run whose plan has something to report: the record may
/// still stand for this tree (it changed only where the record's plan read nothing), and the
/// report must not go quiet. Best effort, as writing one is.
async fn forget(ctx: &Context) {
    let removed = async {
        if let Some(v) = ctx.store.version(QUIET_KEY).await? {
            ctx.store.delete_if(QUIET_KEY, &v).await?;
        }
        Ok::<(), RunError>(())
    };
    if let Err(e) = removed.await {
        tracing::warn!(error = %e, "the quiet record was not removed");
    }
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
        forget(ctx).await;
        return;
    };
    let written = async {
        let quiet = Quiet {
            version: crate::domain::incremental::PLAN_RULES.to_string(),
            tree: ctx.repo.tree_id(&plan.commit)?,
            index_version: h.version().to_string(),
            until,
            last_reconciled: h.index.last_reconciled.clone(),
            requests: plan.requests.len(),
            at: now,
            events_file: opts.events_file.is_some(),
            reads_in_requests: reads_only_requests(plan),
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
