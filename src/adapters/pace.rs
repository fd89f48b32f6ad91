//! One send rate shared by every signature in flight to a throttling service (KMS): it starts
//! unpaced, drops to four fifths of what was getting through at the first ThrottlingException,
//! then grows a little with each success and is cut by a fifth on each new throttle, never from
//! more than what is getting through. Signatures that each backed off on their own, with full
//! jitter up to seconds, left the quota idle at the end of a batch while all of them slept.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Each throttle cuts the rate by this factor.
const DECREASE: f64 = 0.8;
/// Each success adds this many sends per second, so the rate grows by about 5% a second; at
/// low rates it adds 1/rate instead (one more send per second, each second).
const INCREASE: f64 = 0.05;
/// Throttles this close to the last cut answer the same burst: they do not cut again.
const SAME_BURST: Duration = Duration::from_millis(100);
const MIN_RATE: f64 = 0.5;
/// What is "getting through": the successes (or, when none, the attempts) of the last second.
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Pace {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Sends per second; None until the first throttle.
    rate: Option<f64>,
    last_send: Option<Instant>,
    last_cut: Option<Instant>,
    /// Attempts and successes in the last [`WINDOW`].
    sent: VecDeque<Instant>,
    ok: VecDeque<Instant>,
}

/// Drops the times older than [`WINDOW`] (tasks report out of order: never a negative age).
fn in_window(q: &mut VecDeque<Instant>, now: Instant) -> usize {
    while q
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > WINDOW)
    {
        q.pop_front();
    }
    q.len()
}

impl Pace {
    /// Sends now, or says how long to wait before asking again. Nothing is reserved ahead: a
    /// waiter asks again when it wakes, so a rate that grew meanwhile lets it go sooner.
    pub fn try_send(&self, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock().expect("pace lock");
        if let (Some(rate), Some(last)) = (s.rate, s.last_send) {
            let due = last + Duration::from_secs_f64(1.0 / rate);
            if now < due {
                return Err(due - now);
            }
        }
        s.last_send = Some(now);
        s.sent.push_back(now);
        in_window(&mut s.sent, now);
        Ok(())
    }

    pub fn success(&self, now: Instant) {
        let mut s = self.state.lock().expect("pace lock");
        s.ok.push_back(now);
        in_window(&mut s.ok, now);
        if let Some(r) = &mut s.rate {
            *r += INCREASE.max(1.0 / *r);
        }
    }

    pub fn throttled(&self, now: Instant) {
        let mut s = self.state.lock().expect("pace lock");
        if s.last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < SAME_BURST)
        {
            return;
        }
        // Nothing got through (the first call was throttled): the attempts are the estimate,
        // so a start against a quota another client spent is not cut to the floor at once.
        let through = match in_window(&mut s.ok, now) {
            0 => in_window(&mut s.sent, now),
            n => n,
        } as f64;
        let base = s.rate.map_or(through, |r| r.min(through.max(1.0)));
        s.rate = Some((base * DECREASE).max(MIN_RATE));
        s.last_cut = Some(now);
    }

    /// The current rate (None: unpaced).
    pub fn rate(&self) -> Option<f64> {
        self.state.lock().expect("pace lock").rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 successes at `t0`, then a throttle: paced at 80 a second.
    fn cut_after_100(t0: Instant) -> Pace {
        let p = Pace::default();
        for _ in 0..100 {
            p.success(t0);
        }
        p.throttled(t0);
        assert_eq!(p.rate(), Some(80.0));
        p
    }

    #[test]
    fn unpaced_until_the_first_throttle_then_what_got_through_less_a_fifth() {
        let p = Pace::default();
        let t0 = Instant::now();
        assert_eq!(p.try_send(t0), Ok(()));
        assert_eq!(p.try_send(t0), Ok(()));
        for i in 0..100 {
            p.success(t0 + Duration::from_millis(5 * i));
        }
        assert_eq!(p.rate(), None);
        p.throttled(t0 + Duration::from_millis(500));
        assert_eq!(p.rate(), Some(80.0));
    }

    #[test]
    fn sends_are_spaced_by_the_rate_and_a_waiter_is_told_how_long() {
        let p = Pace::default();
        let t0 = Instant::now();
        p.success(t0);
        p.success(t0);
        p.throttled(t0);
        // Two successes got through: 1.6 per second.
        let gap = Duration::from_secs_f64(1.0 / 1.6);
        assert_eq!(p.try_send(t0), Ok(()));
        assert_eq!(p.try_send(t0), Err(gap));
        assert_eq!(p.try_send(t0 + gap / 2), Err(gap / 2));
        assert_eq!(p.try_send(t0 + gap), Ok(()));
        assert_eq!(p.try_send(t0 + gap), Err(gap));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.try_send(later), Ok(()));
    }

    #[test]
    fn a_rate_that_grew_lets_a_waiter_go_sooner() {
        let p = Pace::default();
        let t0 = Instant::now();
        p.throttled(t0);
        assert_eq!(p.try_send(t0), Ok(()));
        let Err(before) = p.try_send(t0) else {
            panic!("paced at the floor");
        };
        for _ in 0..10 {
            p.success(t0);
        }
        let Err(after) = p.try_send(t0) else {
            panic!("still paced");
        };
        assert!(after < before / 4, "{after:?} against {before:?}");
    }

    #[test]
    fn one_burst_of_throttles_cuts_once_and_successes_grow_the_rate() {
        let t0 = Instant::now();
        let p = cut_after_100(t0);
        p.throttled(t0 + Duration::from_millis(50));
        assert_eq!(p.rate(), Some(80.0));
        p.throttled(t0 + Duration::from_millis(150));
        assert_eq!(p.rate(), Some(64.0));
        for _ in 0..20 {
            p.success(t0 + Duration::from_millis(200));
        }
        let r = p.rate().unwrap();
        assert!((r - 65.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn a_low_rate_grows_by_one_send_per_second_per_second() {
        let p = Pace::default();
        let t0 = Instant::now();
        p.throttled(t0);
        assert_eq!(p.rate(), Some(MIN_RATE));
        p.success(t0);
        assert_eq!(p.rate(), Some(MIN_RATE + 1.0 / MIN_RATE));
    }

    #[test]
    fn when_nothing_got_through_the_attempts_seed_the_rate() {
        let p = Pace::default();
        let t0 = Instant::now();
        for _ in 0..16 {
            assert_eq!(p.try_send(t0), Ok(()));
        }
        p.throttled(t0);
        assert_eq!(p.rate(), Some(16.0 * DECREASE));
    }

    #[test]
    fn a_cut_starts_from_what_gets_through_when_the_rate_outgrew_it() {
        let t0 = Instant::now();
        let p = cut_after_100(t0);
        let later = t0 + Duration::from_secs(5);
        for _ in 0..10 {
            p.success(later);
        }
        p.throttled(later + Duration::from_millis(500));
        assert_eq!(p.rate(), Some(8.0));
    }

    #[test]
    fn the_rate_never_reaches_zero() {
        let p = Pace::default();
        let t0 = Instant::now();
        for i in 0..50 {
            p.throttled(t0 + Duration::from_secs(i));
        }
        assert_eq!(p.rate(), Some(MIN_RATE));
        let at = t0 + Duration::from_secs(60);
        assert_eq!(p.try_send(at), Ok(()));
        assert_eq!(p.try_send(at), Err(Duration::from_secs(2)));
    }
}
