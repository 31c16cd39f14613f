//! The display zone of notification timestamps (SPEC 2.5): stored in UTC, shown as
//! `yyyy-MM-ddTHH:mm:ss` wall-clock time of a configurable IANA zone.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// The zone timestamps are shown in (`UTC` by default, `Asia/Seoul` in the original).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Zone(Tz);

impl Zone {
    /// Coordinated Universal Time.
    pub fn utc() -> Self {
        Zone(Tz::UTC)
    }

    /// `2026-02-06T10:00:00`: the seed's shape, seconds precision, no offset.
    pub fn format(&self, at: DateTime<Utc>) -> String {
        at.with_timezone(&self.0)
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    }
}

impl Default for Zone {
    fn default() -> Self {
        Zone::utc()
    }
}

impl FromStr for Zone {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<Tz>()
            .map(Zone)
            .map_err(|_| format!("unknown time zone {s:?} (expected an IANA name like Asia/Seoul)"))
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn formats_without_fraction_or_offset() {
        let at = Utc.timestamp_millis_opt(1_770_372_000_123).unwrap();
        assert_eq!(Zone::utc().format(at), "2026-02-06T10:00:00");
        assert_eq!(
            "Asia/Seoul".parse::<Zone>().unwrap().format(at),
            "2026-02-06T19:00:00"
        );
    }

    #[test]
    fn unknown_zone_is_a_clear_error() {
        let err = "Mars/Olympus".parse::<Zone>().unwrap_err();
        assert!(err.contains("Mars/Olympus"), "{err}");
    }
}
