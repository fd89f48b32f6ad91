//! Events of a run (issued, renewed, rejected, revoked, expiring), as the serverless CA notifies
//! them. Pure: the notify adapter sends them.

use super::finding::Finding;
use super::state::Index;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;

/// Events kept per channel for the next apply, at most: a channel down for weeks must not grow
/// the state without bound. The oldest go first.
pub const MAX_UNDELIVERED: usize = 1000;

/// Events a channel did not take, by channel (`file`, `sns`, `webhook`), as sent (JSON): kept in
/// the state, so an old gitca's events stay readable whatever the event type becomes.
pub type Undelivered = BTreeMap<String, Vec<serde_json::Value>>;

/// What `channel` sends this run: what it did not take before, then this run's events.
pub fn to_send(
    undelivered: &Undelivered,
    channel: &str,
    new: &[serde_json::Value],
) -> Vec<serde_json::Value> {
    let mut all = undelivered.get(channel).cloned().unwrap_or_default();
    all.extend_from_slice(new);
    all
}

/// The newest [`MAX_UNDELIVERED`] of `events`, and how many older ones were dropped.
pub fn bounded(mut events: Vec<serde_json::Value>) -> (Vec<serde_json::Value>, usize) {
    let dropped = events.len().saturating_sub(MAX_UNDELIVERED);
    events.drain(..dropped);
    (events, dropped)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Issued,
    Reissued,
    Renewed,
    Rejected,
    Revoked,
    Expiring,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: Kind,
    pub ca: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub not_after: Option<OffsetDateTime>,
    /// For `expiring`: the threshold crossed (days before expiry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_left: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Finding>,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
}

impl Event {
    pub fn new(event: Kind, ca: &str, time: OffsetDateTime) -> Event {
        Event {
            event,
            ca: ca.to_string(),
            request: None,
            serial: None,
            not_after: None,
            days_left: None,
            reasons: vec![],
            time,
        }
    }
}

/// `expiring` events for the current certificates of `requests` whose expiry minus a threshold
/// falls in (since, now]: each threshold fires once, whatever the cron interval. Only thresholds
/// the certificate lived to cross: a new 30-day certificate is not "expiring within 30 days".
pub fn expiring(
    index: &Index,
    requests: &BTreeSet<&str>,
    thresholds: &[u32],
    since: OffsetDateTime,
    now: OffsetDateTime,
    ca: &str,
) -> Vec<Event> {
    let mut out = Vec::new();
    let current = index.current_all();
    for id in requests {
        let Some(&(serial, c)) = current.get(id) else {
            continue;
        };
        for &d in thresholds {
            let at = c.not_after - time::Duration::days(d as i64);
            if at > since && at > c.not_before && at <= now && c.not_after > now {
                let mut e = Event::new(Kind::Expiring, ca, now);
                e.request = Some(id.to_string());
                e.serial = Some(serial.clone());
                e.not_after = Some(c.not_after);
                e.days_left = Some(d);
                out.push(e);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::state::CertSummary;
    use time::macros::datetime;

    #[test]
    fn each_threshold_fires_once() {
        let not_after = datetime!(2026-12-31 00:00 UTC);
        let mut i = Index::new("ca".into());
        i.certs.insert(
            "0a".into(),
            CertSummary {
                request_id: "requests/a.yaml".into(),
                request_hash: "h".into(),
                key_id: "k".into(),
                not_before: not_after - time::Duration::days(90),
                not_after,
                revoked: None,
                round: None,
            },
        );
        let reqs: BTreeSet<&str> = ["requests/a.yaml"].into();
        let t = [30, 15, 7, 1];
        let day = |d: i64| not_after - time::Duration::days(d);
        // A run 31 days before: nothing. Then 29.5 days before: the 30-day threshold.
        assert!(expiring(&i, &reqs, &t, day(40), day(31), "ca").is_empty());
        let e = expiring(
            &i,
            &reqs,
            &t,
            day(31),
            day(29) - time::Duration::hours(12),
            "ca",
        );
        assert_eq!(
            e.iter().map(|e| e.days_left.unwrap()).collect::<Vec<_>>(),
            vec![30]
        );
        // The next run does not send it again; a long gap sends both crossed thresholds.
        assert!(expiring(&i, &reqs, &t, day(29), day(28), "ca").is_empty());
        let e = expiring(&i, &reqs, &t, day(28), day(6), "ca");
        assert_eq!(
            e.iter().map(|e| e.days_left.unwrap()).collect::<Vec<_>>(),
            vec![15, 7]
        );
        // Not for requests that are gone.
        assert!(expiring(&i, &BTreeSet::new(), &t, day(40), day(0), "ca").is_empty());
    }

    #[test]
    fn a_channel_sends_what_it_did_not_take_before_first_and_keeps_a_bounded_backlog() {
        let ev = |n: usize| serde_json::json!({ "n": n });
        let mut u = Undelivered::new();
        u.insert("webhook".into(), vec![ev(0), ev(1)]);
        assert_eq!(to_send(&u, "webhook", &[ev(2)]), vec![ev(0), ev(1), ev(2)]);
        assert_eq!(to_send(&u, "sns", &[ev(2)]), vec![ev(2)]);
        let many: Vec<_> = (0..MAX_UNDELIVERED + 5).map(ev).collect();
        let (kept, dropped) = bounded(many);
        assert_eq!((kept.len(), dropped), (MAX_UNDELIVERED, 5));
        assert_eq!(kept[0], ev(5), "the oldest go first");
        assert_eq!(bounded(vec![ev(1)]), (vec![ev(1)], 0));
    }

    /// Found by review: a certificate issued or renewed in a run more than its backdate after
    /// the last one was announced as expiring within its whole lifetime (30 days for a new
    /// 30-day certificate; 15, 7 and 1 for a new 1-day one).
    #[test]
    fn a_threshold_before_the_certificate_began_never_fires() {
        let issued = datetime!(2026-12-01 00:00 UTC);
        let mut i = Index::new("ca".into());
        for (serial, id, days) in [("0a", "requests/a.yaml", 30), ("0b", "requests/b.yaml", 1)] {
            i.certs.insert(
                serial.into(),
                CertSummary {
                    request_id: id.into(),
                    request_hash: "h".into(),
                    key_id: serial.into(),
                    not_before: issued,
                    not_after: issued + time::Duration::days(days),
                    revoked: None,
                    round: None,
                },
            );
        }
        let reqs: BTreeSet<&str> = ["requests/a.yaml", "requests/b.yaml"].into();
        let t = [30, 15, 7, 1];
        // The run that issued them, a day after the last one.
        let now = issued + time::Duration::minutes(5);
        let e = expiring(&i, &reqs, &t, now - time::Duration::days(1), now, "ca");
        assert!(e.is_empty(), "{e:?}");
        // The 1-day certificate crosses no threshold later either; the 30-day one its 15.
        let later = issued + time::Duration::days(16);
        let e = expiring(&i, &reqs, &t, now, later, "ca");
        let got: Vec<_> = e
            .iter()
            .map(|e| (e.request.clone().unwrap(), e.days_left.unwrap()))
            .collect();
        assert_eq!(got, vec![("requests/a.yaml".to_string(), 15)]);
    }
}
