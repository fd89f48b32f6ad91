//! Incremental reconciles: the cost of a run follows what changed, not the size of the
//! repository. A successful apply records a [`Basis`]: for every request of the reconciled
//! commit, the hash, CSR path, lifetime, policy and `revoke_superseded` it was planned with.
//! The next run diffs the reviewed commit against that commit and [`triage`] decides, from the
//! basis and the index alone, which requests keep their outcome (carried: no file read, no CSR
//! check) and which are read and planned in full. A request is carried only when the full plan would certainly say
//! `unchanged` or `revoked` for it; anything else (a change, a renewal, a rejection, a key
//! conflict, the CA's lifetime) is planned in full, so both ways give the same plan.

use super::config::Config;
use super::plan::{
    Action, CaFacts, Plan, RevocationAction, is_misnamed_revocation_file, is_request_file,
    is_revocation_file,
};
use super::state::{ByRequest, Index};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;

/// The state object holding the basis.
pub const BASIS_KEY: &str = "plan-basis.txt";
/// A basis of another version is not read: the next run plans in full and records a new one.
/// Version 2 added `revoke_superseded`; 3 marks bases recorded since gitca refuses names that
/// are not UTF-8 (one before may stand for a plan that read such a request as `?`); 4 escapes
/// control characters and `%` in its fields and ends with a count (in 3, a request path with a
/// tab or a newline, which git allows, read back as other requests).
const HEADER: &str = "gitca-plan-basis 4";

/// The gitca build whose plan rules wrote a record: the package version and a hash of the
/// sources (see build.rs). A basis or a quiet record of another build is not trusted, since a
/// plan rule may have changed without the version.
pub const PLAN_RULES: &str = env!("GITCA_BUILD_ID");

/// What the last reconcile planned for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    /// The CSR's path in the commit.
    pub csr: String,
    /// The request hash; empty when the request was rejected or blocked by a revocation.
    pub hash: String,
    /// The lifetime a new certificate would get (the CA-lifetime check depends on the date).
    pub lifetime_secs: u64,
    pub policy: String,
    /// The request revokes its superseded certificates: while an older one is live, the full
    /// plan would revoke it, so the request is not carried.
    pub revoke_superseded: bool,
}

impl Carried {
    /// The last moment a new certificate of this request surely ends within the CA's lifetime
    /// (the plan may reject it after): one started as late as it may, at `now` (see
    /// `plan::issue_start`).
    pub fn last_issuable(&self, ca: &CaFacts) -> OffsetDateTime {
        ca.not_after - time::Duration::seconds(self.lifetime_secs as i64)
    }
}

/// Every request of one reconciled commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Basis {
    /// The gitca version that wrote it: another version plans in full once.
    pub version: String,
    pub commit: String,
    /// The output folder's tree id in the commit gitca wrote, to notice hand edits.
    pub outputs_tree: Option<String>,
    pub requests: BTreeMap<String, Carried>,
}

impl Basis {
    /// One line per request, tab-separated: small to store and fast to read at 100,000.
    pub fn render(&self) -> String {
        Basis::render_from(
            &self.version,
            &self.commit,
            self.outputs_tree.as_deref(),
            self.requests.iter().map(|(id, c)| (id.as_str(), c)),
        )
    }

    /// The text of a basis with these fields, from borrowed requests (a plan's, without
    /// copying 100,000 of them into a map first).
    pub fn render_from<'a>(
        version: &str,
        commit: &str,
        outputs_tree: Option<&str>,
        requests: impl Iterator<Item = (&'a str, &'a Carried)>,
    ) -> String {
        let mut s = format!(
            "{HEADER}\nversion\t{version}\ncommit\t{commit}\noutputs\t{}\n",
            outputs_tree.unwrap_or("-")
        );
        let (least, most) = requests.size_hint();
        s.reserve(most.unwrap_or(least) * 120);
        let mut count = 0usize;
        for (id, c) in requests {
            let revokes = if c.revoke_superseded { "1" } else { "0" };
            for f in [
                id,
                &c.csr,
                &c.hash,
                &c.lifetime_secs.to_string(),
                &c.policy,
                revokes,
            ] {
                push_escaped(&mut s, f);
                s.push('\t');
            }
            s.pop();
            s.push('\n');
            count += 1;
        }
        // An id is never empty, so this line is no request's.
        s.push_str(&format!("\tend\t{count}\n"));
        s
    }

    pub fn parse(text: &str) -> Result<Basis, String> {
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err("not a plan basis of this format".into());
        }
        let mut field = |name: &str| header_field(&mut lines, name, "plan basis");
        let version = field("version")?;
        let commit = field("commit")?;
        let outputs = field("outputs")?;
        // Collected, then built in bulk: the lines are in id order, and inserting 100,000 ids
        // one at a time into a tree costs more than the rest of the parse.
        let mut requests = Vec::with_capacity(text.len() / 128);
        let mut end = None;
        for l in lines {
            if end.is_some() {
                return Err(format!("plan basis: a line after its end: {l:?}"));
            }
            if let Some(n) = l.strip_prefix("\tend\t") {
                end = Some(
                    n.parse::<usize>()
                        .map_err(|_| format!("plan basis: bad end {l:?}"))?,
                );
                continue;
            }
            let mut f = l.split('\t');
            let (
                Some(id),
                Some(csr),
                Some(hash),
                Some(lifetime),
                Some(policy),
                Some(revokes),
                None,
            ) = (
                f.next(),
                f.next(),
                f.next(),
                f.next(),
                f.next(),
                f.next(),
                f.next(),
            )
            else {
                return Err(format!("plan basis: bad line {l:?}"));
            };
            let revoke_superseded = match revokes {
                "0" => false,
                "1" => true,
                _ => return Err(format!("plan basis: bad revoke_superseded in {l:?}")),
            };
            let field =
                |f: &str| unescape(f).ok_or_else(|| format!("plan basis: bad escape in {l:?}"));
            requests.push((
                field(id)?,
                Carried {
                    csr: field(csr)?,
                    hash: field(hash)?,
                    lifetime_secs: lifetime
                        .parse()
                        .map_err(|_| format!("plan basis: bad lifetime in {l:?}"))?,
                    policy: field(policy)?,
                    revoke_superseded,
                },
            ));
        }
        // A basis cut short at a line's end would otherwise read as one without the requests
        // it lost, which are then neither carried nor read.
        match end {
            Some(n) if n == requests.len() => {}
            Some(n) => {
                return Err(format!(
                    "plan basis: ends after {n} requests but holds {}",
                    requests.len()
                ));
            }
            None => return Err("plan basis: no end line (cut short?)".into()),
        }
        let lines = requests.len();
        let requests = super::state::map_from_pairs(requests);
        if requests.len() != lines {
            return Err("plan basis: a request appears twice".into());
        }
        Ok(Basis {
            version,
            commit,
            outputs_tree: (outputs != "-").then_some(outputs),
            requests,
        })
    }
}

/// A field as the basis holds it: `%`, the tab and newline that separate fields and lines, and
/// every other control character as `%XX`; anything else as is.
fn push_escaped(s: &mut String, f: &str) {
    let special = |b: u8| b == b'%' || b.is_ascii_control();
    if !f.bytes().any(special) {
        s.push_str(f);
        return;
    }
    for ch in f.chars() {
        match u8::try_from(ch) {
            Ok(b) if special(b) => s.push_str(&format!("%{b:02X}")),
            _ => s.push(ch),
        }
    }
}

/// The field [`push_escaped`] wrote, or `None` for a bad escape or a raw control character.
fn unescape(f: &str) -> Option<String> {
    if f.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    if !f.contains('%') {
        return Some(f.to_string());
    }
    let mut out = String::with_capacity(f.len());
    let mut rest = f;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let hex = rest.get(i + 1..i + 3)?;
        let b = u8::from_str_radix(hex, 16).ok()?;
        if !(b == b'%' || b.is_ascii_control()) || hex != format!("{b:02X}") {
            return None;
        }
        out.push(b as char);
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The next line of a record's header, `name<TAB>value`: the value.
fn header_field(lines: &mut std::str::Lines, name: &str, record: &str) -> Result<String, String> {
    lines
        .next()
        .and_then(|l| l.strip_prefix(name))
        .and_then(|r| r.strip_prefix('\t'))
        .map(str::to_string)
        .ok_or_else(|| format!("{record}: expected {name}"))
}

/// The state object holding the [`Quiet`] record.
pub const QUIET_KEY: &str = "reconcile-quiet.txt";
/// 4: a record written before gitca refused names that are not UTF-8 may stand for a plan that
/// read such a request as `?`; it is not trusted, so the next run plans.
const QUIET_HEADER: &str = "gitca-reconcile-quiet 4";

/// Left by a reconcile that found nothing to do: until `until`, a run on the same tree against
/// the same index would find nothing to do either, so it need not read the requests, the index
/// or the basis at all. Every input of the plan is pinned: the tree (requests, policies,
/// config, CA certificates and outputs alike; a tree changed only where no plan reads keeps
/// the plan, see [`quiet_despite`]), the index version (any state change moves it), and time
/// (the first renewal, expiry, CRL refresh or expiry event; see [`quiet_until`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quiet {
    /// The gitca version that wrote it.
    pub version: String,
    /// The CA folder's tree id in the reconciled commit.
    pub tree: String,
    /// The index version after that reconcile.
    pub index_version: String,
    pub until: OffsetDateTime,
    /// The index's last reconciled commit (a rewritten history is still refused).
    pub last_reconciled: Option<String>,
    /// How many requests that plan had, for the report.
    pub requests: usize,
    /// When that reconcile ran: an earlier time (another runner's clock, `--now`) may find
    /// certificates live again, so it plans.
    pub at: OffsetDateTime,
    /// Whether that run sent events to a file (`apply --events`, the one event target outside
    /// the tree): without one, expiry thresholds crossed were not sent and stay pending.
    pub events_file: bool,
    /// Whether every file that plan read besides the global inputs lies under `requests/` (the
    /// CSRs, and requests named by revocation entries): only then can a change elsewhere leave
    /// its plan standing (see [`quiet_despite`]).
    pub reads_in_requests: bool,
}

impl Quiet {
    pub fn render(&self) -> String {
        format!(
            "{QUIET_HEADER}\nversion\t{}\ntree\t{}\nindex\t{}\nuntil\t{}\nlast\t{}\nrequests\t{}\nat\t{}\nevents\t{}\nreads\t{}\n",
            self.version,
            self.tree,
            self.index_version,
            self.until.unix_timestamp(),
            self.last_reconciled.as_deref().unwrap_or("-"),
            self.requests,
            self.at.unix_timestamp(),
            u8::from(self.events_file),
            match self.reads_in_requests {
                true => "requests",
                false => "elsewhere",
            }
        )
    }

    pub fn parse(text: &str) -> Result<Quiet, String> {
        let mut lines = text.lines();
        if lines.next() != Some(QUIET_HEADER) {
            return Err("not a quiet record of this format".into());
        }
        let mut field = |name: &str| header_field(&mut lines, name, "quiet record");
        let version = field("version")?;
        let tree = field("tree")?;
        let index_version = field("index")?;
        let time = |v: String, name: &str| {
            v.parse::<i64>()
                .ok()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                .ok_or(format!("quiet record: bad {name}"))
        };
        let until = time(field("until")?, "until")?;
        let last = field("last")?;
        let requests = field("requests")?
            .parse()
            .map_err(|_| "quiet record: bad requests")?;
        let at = time(field("at")?, "at")?;
        let events_file = match field("events")?.as_str() {
            "0" => false,
            "1" => true,
            _ => return Err("quiet record: bad events".into()),
        };
        let reads_in_requests = match field("reads")?.as_str() {
            "requests" => true,
            "elsewhere" => false,
            _ => return Err("quiet record: bad reads".into()),
        };
        Ok(Quiet {
            version,
            tree,
            index_version,
            until,
            last_reconciled: (last != "-").then_some(last),
            requests,
            at,
            events_file,
            reads_in_requests,
        })
    }
}

/// Until when a plan that found nothing to do stays so, with the same tree and index: the
/// first moment a decision of the plan, the CRL or the expiry events depends on time. None when
/// the plan has anything to do or report (changes, rejections, orphans, warnings): such a plan
/// is made again on every run.
pub fn quiet_until(
    plan: &Plan,
    index: &Index,
    config: &Config,
    ca: &CaFacts,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let noop_revocations = plan.revocations.iter().all(|r| {
        matches!(
            r.action,
            RevocationAction::AlreadyRevoked | RevocationAction::PreviousCa
        )
    });
    if plan.has_changes()
        || plan.has_rejections()
        || !plan.orphans.is_empty()
        || !plan.warnings.is_empty()
        || !noop_revocations
    {
        return None;
    }
    let renew_before = config.issuance.renew_before.as_time();
    let crl_lifetime = config.crl.lifetime.as_time();
    let days = |d: &u32| time::Duration::days(i64::from(*d));
    let certs = ByRequest::new(index);
    // The CA's own end changes everything.
    let mut until = ca.not_after;
    for r in &plan.requests {
        if !matches!(r.action, Action::Unchanged | Action::Revoked) {
            return None;
        }
        // A request read in full (even one revoked as it is) is rejected once a new
        // certificate would outlive the CA.
        let carry = r.carry.as_ref().filter(|c| !c.hash.is_empty());
        if let Some(c) = carry {
            until = until.min(c.last_issuable(ca));
        }
        if r.action == Action::Revoked {
            // Blocked by a revocation, or revoked as it is: stays so while nothing changes.
            continue;
        }
        carry?;
        let (_, current) = ByRequest::current(certs.of(&r.id))?;
        until = until.min(current.renewal_at(renew_before));
    }
    for c in index.certs.values() {
        if c.is_live(now) {
            // Its expiry frees its key, and every expiry threshold before it sends an event.
            until = until.min(c.not_after);
            for at in config
                .events
                .expiry_days
                .iter()
                .map(|d| c.not_after - days(d))
            {
                if at > now {
                    until = until.min(at);
                }
            }
        }
        if c.revoked.is_some() && c.not_after + crl_lifetime > now {
            // It leaves the CRL.
            until = until.min(c.not_after + crl_lifetime);
        }
    }
    for p in index.previous_ca.values() {
        if p.keep_until + crl_lifetime > now {
            until = until.min(p.keep_until + crl_lifetime);
        }
    }
    let crl = index.crl.as_ref()?;
    until = until.min(crl.next_update - config.crl.overlap.as_time());
    (until > now).then_some(until)
}

/// A path that changed between the basis commit and the reviewed commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub deleted: bool,
}

/// What to read for this run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Triage {
    /// Requests whose outcome is carried from the basis.
    pub carried: BTreeMap<String, Carried>,
    /// Request files to read and plan in full.
    pub load: BTreeSet<String>,
    /// Requests present in the basis whose file was deleted.
    pub deleted: BTreeSet<String>,
}

/// Why the whole repository must be planned, if it must.
pub fn needs_full_scan(changes: &[Change], config: &Config) -> Option<String> {
    if config.serverless.is_some() {
        return Some("the serverless layout is read in place".into());
    }
    let global = |p: &str| {
        p == "gitca.yaml"
            || p.starts_with("policies/")
            || is_revocation_file(p)
            || is_misnamed_revocation_file(p)
            || p == config.ca.certificate
            || config.ca.chain.iter().any(|c| c == p)
            || p.starts_with("certs/")
    };
    changes
        .iter()
        .find(|c| global(&c.path))
        .map(|c| format!("{} changed", c.path))
}

/// Why a change since the tree a quiet record was written for makes the run plan, if one
/// does: anything a plan reads (every path [`needs_full_scan`] names, and `requests/`, where the
/// request files and, when the record says so, every CSR they name and every request a
/// revocation names are) or gitca writes (the
/// outputs: a hand edit is put back). Other paths, such as a README beside the requests, no
/// plan reads, so the plan the record was written for stands.
pub fn quiet_despite(changes: &[Change], config: &Config) -> Option<String> {
    if let Some(reason) = needs_full_scan(changes, config) {
        return Some(reason);
    }
    changes
        .iter()
        .find(|c| c.path.starts_with("requests/") || config.output.holds(&c.path))
        .map(|c| format!("{} changed", c.path))
}

/// Whether every file `plan` read, besides the inputs every plan reads (see
/// [`needs_full_scan`]), lies under `requests/`: each request's CSR, and the request a
/// `request:` revocation entry names (it must exist while it has no certificate). A request
/// without a CSR path in a quiet plan is blocked by a revocation, which the plan decides
/// without reading its CSR.
pub fn reads_only_requests(plan: &Plan) -> bool {
    use super::revocation::Target;
    let csrs = plan.requests.iter().all(|r| {
        (r.carry.as_ref()).is_some_and(|c| c.csr.is_empty() || c.csr.starts_with("requests/"))
    });
    let revoked = plan.revocations.iter().all(|r| match &r.parsed {
        Some(entry) => match &entry.target {
            Target::Request(path) => path.starts_with("requests/"),
            Target::Serial(_) => true,
        },
        None => false,
    });
    csrs && revoked
}

/// Puts the request files that changed into `t` (read, or deleted) with the requests naming a
/// changed file as their CSR; returns the request files touched.
fn take_changed(basis: &Basis, changes: &[Change], t: &mut Triage) -> BTreeSet<String> {
    let mut touched = BTreeSet::new();
    for c in changes {
        if is_request_file(&c.path) {
            if !c.deleted {
                t.load.insert(c.path.clone());
            } else if basis.requests.contains_key(&c.path) {
                t.deleted.insert(c.path.clone());
            }
            touched.insert(c.path.clone());
        }
    }
    // A changed CSR (or any file a request names as its CSR) re-plans those requests. One pass
    // over the basis against the few changed paths (a map of every CSR cost 100,000 entries).
    let changed: BTreeSet<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    for (id, r) in &basis.requests {
        // Deleted requests are among the touched ones.
        if changed.contains(r.csr.as_str()) && !touched.contains(id) {
            t.load.insert(id.clone());
        }
    }
    touched
}

/// Splits the requests of the reviewed commit into carried and to-read, taking the basis's
/// requests (carried ones are moved, not copied). `changes` must not call for a full scan
/// (see [`needs_full_scan`]).
pub fn triage(
    basis: &mut Basis,
    changes: &[Change],
    index: &Index,
    config: &Config,
    ca: &CaFacts,
    now: OffsetDateTime,
) -> Triage {
    let mut t = Triage::default();
    let touched = take_changed(basis, changes, &mut t);

    let (certs, live_keys) = ByRequest::with_live_keys(index, now);
    let renew_before = config.issuance.renew_before.as_time();
    let candidates: Vec<(String, Carried)> = std::mem::take(&mut basis.requests)
        .into_iter()
        .filter(|(id, _)| !touched.contains(id) && !t.load.contains(id))
        .collect();
    // Independent per request, and at 100,000 requests mostly waiting on memory: all cores.
    let keeps: Vec<bool> = candidates
        .par_iter()
        .map(|(id, carried)| {
            let mine = certs.of(id);
            // Carried only when the full plan would say `unchanged`: the current certificate is
            // of this very request, not due, nothing to supersede (the only live one, or older
            // ones left live because the request does not revoke them), and the checks the plan
            // makes on every request pass. A request whose newest certificate was revoked as it
            // is is read: a new request planned before it could take its key.
            !carried.hash.is_empty()
                && !certs.revoked_as_is(mine, &carried.hash)
                && ByRequest::current(mine).is_some_and(|(serial, c)| {
                    c.request_hash == carried.hash
                        && !c.renewal_due(now, renew_before)
                        && (!carried.revoke_superseded
                            || mine.iter().all(|(s, o)| *s == serial || !o.is_live(now)))
                        && now <= carried.last_issuable(ca)
                        && !certs.key_compromised(&c.key_id)
                        && live_keys.other_than(&c.key_id, id).is_none()
                })
        })
        .collect();
    let mut carried_requests = Vec::with_capacity(candidates.len());
    for (request, keep) in candidates.into_iter().zip(keeps) {
        if keep {
            carried_requests.push(request);
        } else {
            t.load.insert(request.0);
        }
    }
    // In id order already: the map is built in bulk.
    t.carried = carried_requests.into_iter().collect();
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::revocation::Reason;
    use crate::domain::state::{CertSummary, Revoked};
    use time::macros::datetime;

    /// The CA's facts, ending at `not_after`.
    fn ca_ending(not_after: OffsetDateTime) -> CaFacts {
        CaFacts {
            key_id: "ca".into(),
            not_after,
        }
    }

    fn carried(hash: &str) -> Carried {
        Carried {
            csr: "requests/a.csr".into(),
            hash: hash.into(),
            lifetime_secs: 30 * 86400,
            policy: "p".into(),
            revoke_superseded: false,
        }
    }

    fn cert(id: &str, hash: &str, key: &str, not_after: OffsetDateTime) -> CertSummary {
        CertSummary {
            request_id: id.into(),
            request_hash: hash.into(),
            key_id: key.into(),
            not_before: not_after - time::Duration::days(30),
            not_after,
            revoked: None,
            round: None,
        }
    }

    fn config() -> Config {
        Config::parse("gitca.yaml", "ca: {name: t, certificate: ca/ca.pem}\n").unwrap()
    }

    #[test]
    fn basis_round_trips() {
        let mut b = Basis {
            version: "0.1.0".into(),
            commit: "abc".into(),
            outputs_tree: Some("def".into()),
            ..Default::default()
        };
        b.requests.insert("requests/a.yaml".into(), carried("h1"));
        b.requests.insert("requests/b.yaml".into(), carried(""));
        b.requests.insert(
            "requests/c.yaml".into(),
            Carried {
                revoke_superseded: true,
                ..carried("h3")
            },
        );
        assert_eq!(Basis::parse(&b.render()).unwrap(), b);
        // A basis of an earlier format is not read: 1 had no revoke_superseded; 2 was written
        // when a request whose name is not UTF-8 was read as `?`.
        for earlier in ["gitca-plan-basis 1", "gitca-plan-basis 2"] {
            let old = b.render().replace(HEADER, earlier);
            assert!(Basis::parse(&old).is_err(), "{earlier}");
        }
        assert!(Basis::parse("something else").is_err());
    }

    /// Lines out of order read as sorted; a repeated request, a line with five or seven fields,
    /// a bad escape, a missing end or a wrong count is refused, naming what is wrong.
    #[test]
    fn basis_lines_in_any_order_read_as_sorted_and_bad_ones_are_refused() {
        let header = format!("{HEADER}\nversion\t0.1.0\ncommit\tabc\noutputs\t-\n");
        let line = |id: &str, hash: &str| format!("{id}\t{id}.csr\t{hash}\t60\tp\t0\n");
        let text = format!(
            "{header}{}{}\tend\t2\n",
            line("requests/b", "h1"),
            line("requests/a", "h2"),
        );
        let b = Basis::parse(&text).unwrap();
        assert_eq!(
            b.requests.keys().collect::<Vec<_>>(),
            ["requests/a", "requests/b"]
        );
        for bad in [
            "requests/c\tc.csr\th\t60\tp\n",
            "requests/c\tc.csr\th\t60\tp\t0\tx\n",
            "requests/c%\tc.csr\th\t60\tp\t0\n",
            "requests/c%41\tc.csr\th\t60\tp\t0\n",
        ] {
            let err = Basis::parse(&format!("{header}{bad}\tend\t1\n")).unwrap_err();
            assert!(
                (err.contains("bad line") || err.contains("bad escape"))
                    && err.contains("requests/c"),
                "{err}"
            );
        }
        let twice = format!(
            "{header}{}{}\tend\t2\n",
            line("requests/a", "h1"),
            line("requests/a", "h2")
        );
        assert!(Basis::parse(&twice).unwrap_err().contains("twice"));
        let a = line("requests/a", "h1");
        for (cut, why) in [
            (format!("{header}{a}"), "no end line"),
            (
                format!("{header}{a}\tend\t2\n"),
                "ends after 2 requests but holds 1",
            ),
            (format!("{header}{a}\tend\t1\n{a}"), "a line after its end"),
        ] {
            let err = Basis::parse(&cut).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    /// Defect: a request path with a tab and a newline (git allows both) was written into the
    /// basis as is, and read back as other requests: one overriding `web-01`'s CSR path, so the
    /// next run carried web-01 past its key rotation, and one made up. Every field now reads
    /// back as written.
    #[test]
    fn a_request_path_with_control_characters_reads_back_as_itself() {
        let odd = "requests/servers/web-01.yaml\tnever-changes\th\t60\tp\t0\nzz%.yaml\r\u{7f}";
        let mut b = Basis {
            version: "0.1.0".into(),
            commit: "abc".into(),
            ..Default::default()
        };
        b.requests
            .insert("requests/servers/web-01.yaml".into(), carried("h1"));
        b.requests.insert(
            odd.into(),
            Carried {
                csr: format!("{odd}.csr"),
                policy: "p\tq".into(),
                ..carried("h2")
            },
        );
        let text = b.render();
        assert_eq!(text.lines().count(), 4 + 2 + 1, "{text}");
        assert_eq!(Basis::parse(&text).unwrap(), b);
    }

    #[test]
    fn only_what_the_full_plan_would_leave_alone_is_carried() {
        let now = datetime!(2026-11-28 00:00 UTC);
        let ca = ca_ending(now + time::Duration::days(3650));
        let mut basis = Basis::default();
        let mut index = Index::new("ca".into());
        let ids = ["a", "b", "c", "d", "e", "f", "g"].map(|x| format!("requests/{x}.yaml"));
        for (n, id) in ids.iter().enumerate() {
            basis.requests.insert(id.clone(), carried(&format!("h{n}")));
            index.certs.insert(
                format!("{n:02}"),
                cert(
                    id,
                    &format!("h{n}"),
                    &format!("k{n}"),
                    now + time::Duration::days(20),
                ),
            );
        }
        // b: rejected at the basis (no hash); c: due for renewal; d: its CSR changed;
        // e: its file changed; f: deleted; g: revoked as it is (read: see triage).
        basis.requests.get_mut(&ids[1]).unwrap().hash.clear();
        index.certs.get_mut("02").unwrap().not_after = now + time::Duration::days(5);
        basis.requests.get_mut(&ids[3]).unwrap().csr = "requests/d.csr".into();
        index.certs.get_mut("06").unwrap().revoked = Some(Revoked {
            reason: Reason::Superseded,
            date: now,
            by: "serial:06".into(),
        });
        let changes = vec![
            Change {
                path: "requests/d.csr".into(),
                deleted: false,
            },
            Change {
                path: ids[4].clone(),
                deleted: false,
            },
            Change {
                path: ids[5].clone(),
                deleted: true,
            },
        ];
        let t = triage(&mut basis.clone(), &changes, &index, &config(), &ca, now);
        let kept: Vec<&str> = t.carried.keys().map(String::as_str).collect();
        assert_eq!(kept, vec!["requests/a.yaml"]);
        let load: Vec<&str> = t.load.iter().map(String::as_str).collect();
        assert_eq!(
            load,
            vec![
                "requests/b.yaml",
                "requests/c.yaml",
                "requests/d.yaml",
                "requests/e.yaml",
                "requests/g.yaml"
            ]
        );
        assert!(t.deleted.contains(&ids[5]));

        // Reissued, with the old certificate still live: carried when the request leaves
        // superseded certificates live (the full plan says `unchanged`), read when it revokes
        // them (the full plan would revoke the old one).
        for revoke_superseded in [false, true] {
            let id = "requests/h.yaml".to_string();
            let mut basis = Basis::default();
            let mut index = Index::new("ca".into());
            basis.requests.insert(
                id.clone(),
                Carried {
                    revoke_superseded,
                    ..carried("new")
                },
            );
            let old = cert(&id, "old", "k-old", now + time::Duration::days(10));
            let new = cert(&id, "new", "k-new", now + time::Duration::days(20));
            index.certs.insert("a0".into(), old);
            index.certs.insert("b0".into(), new);
            let t = triage(&mut basis, &[], &index, &config(), &ca, now);
            assert_eq!(
                t.carried.contains_key(&id),
                !revoke_superseded,
                "revoke_superseded: {revoke_superseded}"
            );
            assert_eq!(t.load.contains(&id), revoke_superseded);
        }

        // The CA's end comes within a new certificate's lifetime: planned in full.
        let short = ca_ending(now + time::Duration::days(10));
        let t = triage(&mut basis.clone(), &[], &index, &config(), &short, now);
        assert!(!t.carried.contains_key(&ids[0]));
    }

    /// What a quiet record stands past: files no plan reads. Anything a plan reads (the global
    /// inputs, everything under `requests/`) or gitca writes (outputs) makes the run plan.
    #[test]
    fn a_quiet_record_stands_past_changes_no_plan_reads() {
        let config = config();
        let why = |paths: &[&str]| {
            let changes: Vec<Change> = (paths.iter())
                .map(|p| Change {
                    path: p.to_string(),
                    deleted: false,
                })
                .collect();
            quiet_despite(&changes, &config)
        };
        for unread in [
            &[][..],
            &["NOTES.md"],
            &["docs/a.md", "issuedx/a.pem", "crl/other"],
        ] {
            assert_eq!(why(unread), None, "{unread:?}");
        }
        for read in [
            "gitca.yaml",
            "policies/p.yaml",
            "revocations.yaml",
            "revocations/2026.yaml",
            "ca/ca.pem",
            "certs/old.pem",
            "requests/a.yaml",
            "requests/a.csr.pem",
            "requests/README.md",
            "issued/a.pem",
            "issued",
            "crl/ca.crl",
            "crl/ca.crl.pem",
            "ca/bundle.pem",
        ] {
            let got = why(&["NOTES.md", read]);
            assert_eq!(got, Some(format!("{read} changed")), "{read}");
        }
    }

    #[test]
    fn quiet_record_round_trips() {
        let q = Quiet {
            version: "0.1.0".into(),
            tree: "t".into(),
            index_version: "v".into(),
            until: datetime!(2026-12-03 21:37:15 UTC),
            last_reconciled: Some("c".into()),
            requests: 7,
            at: datetime!(2026-11-28 21:37:15 UTC),
            events_file: true,
            reads_in_requests: true,
        };
        assert_eq!(Quiet::parse(&q.render()).unwrap(), q);
        let none = Quiet {
            last_reconciled: None,
            events_file: false,
            reads_in_requests: false,
            ..q.clone()
        };
        assert_eq!(Quiet::parse(&none.render()).unwrap(), none);
        assert!(Quiet::parse("gitca-reconcile-quiet 1\nversion\t1\n").is_err());
        // A record of the formats before: planned, not misread.
        let older = q
            .render()
            .replace(QUIET_HEADER, "gitca-reconcile-quiet 2")
            .replace("reads\trequests\n", "");
        assert!(Quiet::parse(&older).is_err());
        let before = q.render().replace(QUIET_HEADER, "gitca-reconcile-quiet 3");
        assert!(Quiet::parse(&before).is_err());
    }

    #[test]
    fn quiet_until_is_the_first_thing_due_and_none_with_anything_to_report() {
        use crate::domain::finding::{Code, Finding};
        use crate::domain::plan::RequestPlan;
        use crate::domain::state::CrlInfo;
        let now = datetime!(2026-11-28 00:00 UTC);
        let ca = ca_ending(now + time::Duration::days(3650));
        let mut index = Index::new("ca".into());
        // A 30-day certificate 5 days old: due at not_after - 10 days (renew_before is longer
        // than a third of its life).
        let mut c = cert("requests/a.yaml", "h", "k", now + time::Duration::days(25));
        c.not_before = now - time::Duration::days(5);
        index.certs.insert("01".into(), c);
        index.crl = Some(CrlInfo {
            number: 1,
            this_update: now,
            next_update: now + time::Duration::days(30),
            serials: vec![],
        });
        let request = RequestPlan {
            policy: Some("p".into()),
            serial: Some("01".into()),
            carry: Some(carried("h")),
            ..RequestPlan::new("requests/a.yaml".into(), Action::Unchanged)
        };
        let mut plan = Plan {
            commit: "c".into(),
            requests: vec![request],
            ..Default::default()
        };
        let mut cfg = config();
        cfg.events.expiry_days = vec![];
        let renew = now + time::Duration::days(15);
        assert_eq!(quiet_until(&plan, &index, &cfg, &ca, now), Some(renew));
        // An expiry event (15 days before the end) comes first.
        cfg.events.expiry_days = vec![15];
        assert_eq!(
            quiet_until(&plan, &index, &cfg, &ca, now),
            Some(now + time::Duration::days(10))
        );
        cfg.events.expiry_days = vec![];
        // A CA ending within a new certificate's lifetime of the renewal moves it earlier: to
        // the last moment one started as late as it may (at now) still ends within the CA's.
        let short = ca_ending(now + time::Duration::days(31));
        assert_eq!(
            quiet_until(&plan, &index, &cfg, &short, now),
            Some(now + time::Duration::days(1))
        );
        // The CRL refresh (next update minus the overlap) comes first.
        index.crl.as_mut().unwrap().next_update = now + time::Duration::days(7);
        assert_eq!(
            quiet_until(&plan, &index, &cfg, &ca, now),
            Some(now + time::Duration::days(7) - cfg.crl.overlap.as_time())
        );
        // A request revoked as it is still meets the CA-lifetime check of a full plan.
        plan.requests[0].action = Action::Revoked;
        assert_eq!(
            quiet_until(&plan, &index, &cfg, &short, now),
            Some(now + time::Duration::days(1))
        );
        plan.requests[0].action = Action::Unchanged;
        // Already due, or anything to do or report: no quiet.
        assert_eq!(quiet_until(&plan, &index, &cfg, &ca, renew), None);
        plan.requests[0].action = Action::Rejected;
        plan.requests[0].findings = vec![Finding::new(Code::KeyReuse, "requests/a.yaml", "x")];
        assert_eq!(quiet_until(&plan, &index, &cfg, &ca, now), None);
        plan.requests[0].action = Action::Unchanged;
        plan.requests[0].findings.clear();
        index.crl = None;
        assert_eq!(quiet_until(&plan, &index, &cfg, &ca, now), None);
    }

    #[test]
    fn global_changes_plan_everything() {
        let c = config();
        for p in [
            "gitca.yaml",
            "policies/web.yaml",
            "revocations.yaml",
            "ca/ca.pem",
        ] {
            let ch = [Change {
                path: p.into(),
                deleted: false,
            }];
            assert!(needs_full_scan(&ch, &c).is_some(), "{p}");
        }
        let ch = [Change {
            path: "README.md".into(),
            deleted: false,
        }];
        assert!(needs_full_scan(&ch, &c).is_none());
    }

    #[test]
    fn a_changed_csr_loads_the_requests_naming_it_unless_they_are_deleted() {
        let mut basis = Basis::default();
        for (id, csr) in [("a", "shared"), ("b", "b"), ("c", "shared"), ("d", "d")] {
            let mut r = carried("h");
            r.csr = format!("requests/{csr}.csr");
            basis.requests.insert(format!("requests/{id}.yaml"), r);
        }
        let change = |path: &str, deleted| Change {
            path: path.into(),
            deleted,
        };
        // a and c share a CSR that changed; b's CSR and b itself are deleted; d is untouched.
        let changes = [
            change("requests/b.csr", true),
            change("requests/b.yaml", true),
            change("requests/shared.csr", false),
        ];
        let mut t = Triage::default();
        let touched = take_changed(&basis, &changes, &mut t);
        let set = |ids: &[&str]| -> BTreeSet<String> {
            ids.iter().map(|i| format!("requests/{i}.yaml")).collect()
        };
        assert_eq!(t.load, set(&["a", "c"]));
        assert_eq!(t.deleted, set(&["b"]));
        assert_eq!(touched, set(&["b"]));
    }
}
