//! One send rate shared by every signature in flight to a throttling service (KMS): it starts
//! unpaced, drops to what was getting through at the first ThrottlingException, and then grows
//! slowly and shrinks on each new throttle (additive increase, multiplicative decrease, as TCP
//! does). Signatures that each backed off on their own, with full jitter up to seconds, left the
//! quota idle at the end of a batch while all of them slept.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Each throttle cuts the rate by this factor.
const DECREASE: f64 = 0.8;
/// Each success adds this many sends per second, so the rate grows by about 5% a second; at
/// low rates it adds 1/rate instead (one more send per second, each second), so a rate cut
/// low by a throttle at the very start recovers in seconds, not minutes.
const INCREASE: f64 = 0.05;
/// Throttles this close to the last cut answer the same burst: they do not cut again.
const SAME_BURST: Duration = Duration::from_millis(100);
const MIN_RATE: f64 = 0.5;
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Pace {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Sends per second; None until the first throttle.
    rate: Option<f64>,
    next_slot: Option<Instant>,
    last_cut: Option<Instant>,
    /// Successes in the last [`WINDOW`]: the rate that was getting through.
    recent: VecDeque<Instant>,
}

impl Pace {
    /// When the next attempt may be sent; the slot is taken.
    pub fn slot(&self, now: Instant) -> Instant {
        let mut s = self.state.lock().expect("pace lock");
        let Some(rate) = s.rate else {
            return now;
        };
        let at = s.next_slot.map_or(now, |n| n.max(now));
        s.next_slot = Some(at + Duration::from_secs_f64(1.0 / rate));
        at
    }

    pub fn success(&self, now: Instant) {
        let mut s = self.state.lock().expect("pace lock");
        s.recent.push_back(now);
        while s.recent.front().is_some_and(|t| now - *t > WINDOW) {
            s.recent.pop_front();
        }
        if let Some(r) = &mut s.rate {
            *r += INCREASE.max(1.0 / *r);
        }
    }

    pub fn throttled(&self, now: Instant) {
        let mut s = self.state.lock().expect("pace lock");
        if s.last_cut.is_some_and(|t| now - t < SAME_BURST) {
            return;
        }
        let through = s.recent.iter().filter(|t| now - **t <= WINDOW).count() as f64;
        let base = s.rate.unwrap_or(through);
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

    #[test]
    fn unpaced_until_the_first_throttle_then_what_got_through_less_a_fifth() {
        let p = Pace::default();
        let t0 = Instant::now();
        assert_eq!(p.slot(t0), t0);
        for i in 0..100 {
            p.success(t0 + Duration::from_millis(5 * i));
        }
        assert_eq!(p.rate(), None);
        p.throttled(t0 + Duration::from_millis(500));
        assert_eq!(p.rate(), Some(80.0));
    }

    #[test]
    fn slots_are_spaced_by_the_rate_and_never_in_the_past() {
        let p = Pace::default();
        let t0 = Instant::now();
        p.success(t0);
        p.success(t0);
        p.throttled(t0);
        // Two successes got through: 1.6 per second.
        let gap = Duration::from_secs_f64(1.0 / 1.6);
        assert_eq!(p.slot(t0), t0);
        assert_eq!(p.slot(t0), t0 + gap);
        assert_eq!(p.slot(t0), t0 + gap * 2);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.slot(later), later);
    }

    #[test]
    fn one_burst_of_throttles_cuts_once_and_successes_grow_the_rate() {
        let p = Pace::default();
        let t0 = Instant::now();
        for _ in 0..100 {
            p.success(t0);
        }
        p.throttled(t0);
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
    fn the_rate_never_reaches_zero() {
        let p = Pace::default();
        let t0 = Instant::now();
        for i in 0..50 {
            p.throttled(t0 + Duration::from_secs(i));
        }
        assert_eq!(p.rate(), Some(MIN_RATE));
        assert!(p.slot(t0) >= t0);
    }
}
