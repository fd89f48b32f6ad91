//! Human durations in YAML (`30d`, `12h`), parsed by humantime.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Duration);

impl Span {
    /// The longest span gitca takes: 100 years (humantime's `100y`). Any validity or margin
    /// past it is a typo, and added to today it stays far inside the dates certificates and
    /// the `time` crate can hold (a span of 10,000 years overflowed the arithmetic).
    pub const MAX: Span = Span(Duration::from_secs(100 * 31_557_600));

    /// `secs` seconds, or None past [`Span::MAX`].
    pub fn checked_secs(secs: u64) -> Option<Span> {
        let span = Span(Duration::from_secs(secs));
        (span <= Span::MAX).then_some(span)
    }

    pub fn days(d: u64) -> Self {
        Span(Duration::from_secs(d * 86_400))
    }
    pub fn secs(self) -> i64 {
        self.0.as_secs() as i64
    }
    pub fn as_time(self) -> time::Duration {
        time::Duration::seconds(self.secs())
    }
}

impl std::str::FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let span = humantime::parse_duration(s.trim())
            .map(Span)
            .map_err(|e| format!("invalid duration {s:?}: {e} (write e.g. 30d, 12h, 5m)"))?;
        if span > Span::MAX {
            return Err(format!(
                "invalid duration {s:?}: longer than {} (100 years), the longest gitca takes",
                Span::MAX
            ));
        }
        Ok(span)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        if s.is_multiple_of(86_400) && s > 0 {
            write!(f, "{}d", s / 86_400)
        } else {
            write!(f, "{}", humantime::format_duration(self.0))
        }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect `lifetime-out-of-range`: `10000y` parsed, and adding it to today panicked in
    /// the plan. Spans stop at 100 years, with an error naming the value.
    #[test]
    fn a_span_over_100_years_is_refused() {
        assert_eq!("100y".parse::<Span>(), Ok(Span::MAX));
        assert_eq!(Span::MAX.to_string(), "36525d");
        for long in ["100y 1s", "10000y", "300000000000y"] {
            let err = long.parse::<Span>().unwrap_err();
            assert!(err.contains(long) && err.contains("100 years"), "{err}");
        }
        assert_eq!(Span::checked_secs(Span::MAX.0.as_secs()), Some(Span::MAX));
        assert_eq!(Span::checked_secs(Span::MAX.0.as_secs() + 1), None);
    }
}
