//! Incremental reconciles: the cost of a run follows what changed, not the size of the
//! repository. A successful apply records a [`Basis`]: for every request of the reconciled
//! commit, the hash, CSR path, lifetime and policy it was planned with. The next run diffs the
//! reviewed commit against that commit and [`triage`] decides, from the basis and the index
//! alone, which requests keep their outcome (carried: no file read, no CSR check) and which are
//! read and planned in full. A request is carried only when the full plan would certainly say
//! `unchanged` or `revoked` for it; anything else (a change, a renewal, a rejection, a key
//! conflict, the CA's lifetime) is planned in full, so both ways give the same plan.

use super::config::Config;
use super::plan::{CaFacts, is_request_file, is_revocation_file};
use super::state::{ByRequest, Index};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use time::OffsetDateTime;

/// The state object holding the basis.
pub const BASIS_KEY: &str = "plan-basis.txt";
const HEADER: &str = "gitca-plan-basis 1";

/// What the last reconcile planned for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// The CSR's path in the commit.
    pub csr: String,
    /// The request hash; empty when the request was rejected or blocked by a revocation.
    pub hash: String,
    /// The lifetime a new certificate would get (the CA-lifetime check depends on the date).
    pub lifetime_secs: u64,
    pub policy: String,
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
        let mut s = format!(
            "{HEADER}\nversion\t{}\ncommit\t{}\noutputs\t{}\n",
            self.version,
            self.commit,
            self.outputs_tree.as_deref().unwrap_or("-")
        );
        s.reserve(self.requests.len() * 120);
        for (id, c) in &self.requests {
            for f in [id, &c.csr, &c.hash, &c.lifetime_secs.to_string(), &c.policy] {
                s.push_str(f);
                s.push('\t');
            }
            s.pop();
            s.push('\n');
        }
        s
    }

    pub fn parse(text: &str) -> Result<Basis, String> {
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err("not a plan basis of this format".into());
        }
        let mut field = |name: &str| -> Result<String, String> {
            let l = lines.next().unwrap_or_default();
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix('\t'))
                .map(str::to_string)
                .ok_or_else(|| format!("plan basis: expected {name}"))
        };
        let version = field("version")?;
        let commit = field("commit")?;
        let outputs = field("outputs")?;
        let mut requests = BTreeMap::new();
        for l in lines {
            let f: Vec<&str> = l.split('\t').collect();
            let [id, csr, hash, lifetime, policy] = f[..] else {
                return Err(format!("plan basis: bad line {l:?}"));
            };
            requests.insert(
                id.to_string(),
                Carried {
                    csr: csr.to_string(),
                    hash: hash.to_string(),
                    lifetime_secs: lifetime
                        .parse()
                        .map_err(|_| format!("plan basis: bad lifetime in {l:?}"))?,
                    policy: policy.to_string(),
                },
            );
        }
        Ok(Basis {
            version,
            commit,
            outputs_tree: (outputs != "-").then_some(outputs),
            requests,
        })
    }
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
            || p == config.ca.certificate
            || config.ca.chain.iter().any(|c| c == p)
            || p.starts_with("certs/")
    };
    changes
        .iter()
        .find(|c| global(&c.path))
        .map(|c| format!("{} changed", c.path))
}

/// Splits the requests of the reviewed commit into carried and to-read. `changes` must not
/// call for a full scan (see [`needs_full_scan`]).
pub fn triage(
    basis: &Basis,
    changes: &[Change],
    index: &Index,
    config: &Config,
    ca: &CaFacts,
    now: OffsetDateTime,
) -> Triage {
    let mut t = Triage::default();
    let mut by_csr: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, c) in &basis.requests {
        by_csr.entry(c.csr.as_str()).or_default().push(id);
    }
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for c in changes {
        if is_request_file(&c.path) {
            if c.deleted {
                if basis.requests.contains_key(&c.path) {
                    t.deleted.insert(c.path.clone());
                }
            } else {
                t.load.insert(c.path.clone());
            }
            touched.insert(c.path.clone());
        }
        // A changed CSR (or any file a request names as its CSR) re-plans those requests.
        for id in by_csr.get(c.path.as_str()).into_iter().flatten() {
            if !t.deleted.contains(*id) && !touched.contains(*id) {
                t.load.insert(id.to_string());
            }
        }
    }

    let certs = ByRequest::new(index);
    let live_keys = certs.live_keys(now);
    let backdate = config.issuance.backdate.as_time();
    let renew_before = config.issuance.renew_before.as_time();
    for (id, carried) in &basis.requests {
        if touched.contains(id) || t.load.contains(id) {
            continue;
        }
        let mine = certs.of(id);
        // Carried only when the full plan would say `unchanged`: the current certificate is
        // of this very request, not due, the only live one (nothing to supersede), and the
        // checks the plan makes on every request pass. A request whose newest certificate
        // was revoked as it is is read: a new request planned before it could take its key.
        let revoked_as_is = ByRequest::newest(mine)
            .is_some_and(|n| n.revoked.is_some() && n.request_hash == carried.hash);
        let lifetime = time::Duration::seconds(carried.lifetime_secs as i64);
        let keeps = !carried.hash.is_empty()
            && !revoked_as_is
            && ByRequest::current(mine).is_some_and(|(serial, c)| {
                c.request_hash == carried.hash
                    && !c.renewal_due(now, renew_before)
                    && mine.iter().all(|(s, o)| *s == serial || !o.is_live(now))
                    && now - backdate + lifetime <= ca.not_after
                    && !certs.compromised(&c.key_id, &carried.hash)
                    && live_keys
                        .get(&c.key_id)
                        .is_none_or(|ids| ids.iter().all(|r| r == id))
            });
        if keeps {
            t.carried.insert(id.clone(), carried.clone());
        } else {
            t.load.insert(id.clone());
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::revocation::Reason;
    use crate::domain::state::{CertSummary, Revoked};
    use time::macros::datetime;

    fn carried(hash: &str) -> Carried {
        Carried {
            csr: "requests/a.csr".into(),
            hash: hash.into(),
            lifetime_secs: 30 * 86400,
            policy: "p".into(),
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
        assert_eq!(Basis::parse(&b.render()).unwrap(), b);
        assert!(Basis::parse("something else").is_err());
    }

    #[test]
    fn only_what_the_full_plan_would_leave_alone_is_carried() {
        let now = datetime!(2026-11-28 00:00 UTC);
        let ca = CaFacts {
            key_id: "ca".into(),
            not_after: now + time::Duration::days(3650),
        };
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
        let t = triage(&basis, &changes, &index, &config(), &ca, now);
        let carried: Vec<&str> = t.carried.keys().map(String::as_str).collect();
        assert_eq!(carried, vec!["requests/a.yaml"]);
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

        // The CA's end comes within a new certificate's lifetime: planned in full.
        let short = CaFacts {
            key_id: "ca".into(),
            not_after: now + time::Duration::days(10),
        };
        let t = triage(&basis, &[], &index, &config(), &short, now);
        assert!(!t.carried.contains_key(&ids[0]));
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
}
