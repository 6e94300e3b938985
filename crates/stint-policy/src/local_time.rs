//! The local time policies see as `context.time`.

/// Local wall-clock parts of a decision's time (`context.time`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeParts {
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// `"Mon"`, `"Tue"`, `"Wed"`, `"Thu"`, `"Fri"`, `"Sat"` or `"Sun"`.
    pub weekday: &'static str,
}

const DAY_S: i128 = 86_400;

/// The local time of `unix_seconds` in the fixed `utc_offset` (the server's configured offset; no time
/// zone database, so no daylight-saving changes). Total: any `i64` gives an answer.
pub fn time_parts(unix_seconds: i64, utc_offset: time::UtcOffset) -> TimeParts {
    let local = i128::from(unix_seconds) + i128::from(utc_offset.whole_seconds());
    let days = local.div_euclid(DAY_S);
    let secs = local.rem_euclid(DAY_S);
    // 1970-01-01 was a Thursday.
    let weekday = match (days + 3).rem_euclid(7) {
        0 => "Mon",
        1 => "Tue",
        2 => "Wed",
        3 => "Thu",
        4 => "Fri",
        5 => "Sat",
        _ => "Sun",
    };
    // INVARIANT: 0 <= secs < 86400, so both fit in a u8.
    TimeParts {
        hour: u8::try_from(secs / 3600).unwrap_or(0),
        minute: u8::try_from(secs % 3600 / 60).unwrap_or(0),
        weekday,
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use time::{OffsetDateTime, UtcOffset, Weekday};

    use super::*;

    fn short(w: Weekday) -> &'static str {
        match w {
            Weekday::Monday => "Mon",
            Weekday::Tuesday => "Tue",
            Weekday::Wednesday => "Wed",
            Weekday::Thursday => "Thu",
            Weekday::Friday => "Fri",
            Weekday::Saturday => "Sat",
            Weekday::Sunday => "Sun",
        }
    }

    #[test]
    fn a_non_zero_offset_moves_hour_and_weekday() {
        // 2026-12-01T23:30:00Z is a Tuesday; at +01:00 it is Wednesday 00:30.
        let t = OffsetDateTime::parse(
            "2026-12-01T23:30:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp();
        assert_eq!(
            time_parts(t, UtcOffset::UTC),
            TimeParts {
                hour: 23,
                minute: 30,
                weekday: "Tue"
            }
        );
        let plus1 = UtcOffset::from_hms(1, 0, 0).unwrap();
        assert_eq!(
            time_parts(t, plus1),
            TimeParts {
                hour: 0,
                minute: 30,
                weekday: "Wed"
            }
        );
        let minus = UtcOffset::from_hms(-5, -30, 0).unwrap();
        assert_eq!(
            time_parts(t, minus),
            TimeParts {
                hour: 18,
                minute: 0,
                weekday: "Tue"
            }
        );
    }

    #[test]
    fn agrees_with_the_time_crate_before_and_after_the_epoch() {
        let offsets = [(0, 0), (1, 0), (-8, 0), (5, 45), (-3, -30), (14, 0)];
        let mut t: i64 = -2_000_000_000;
        while t < 4_000_000_000 {
            for (h, m) in offsets {
                let off = UtcOffset::from_hms(h, m, 0).unwrap();
                let dt = OffsetDateTime::from_unix_timestamp(t).unwrap().to_offset(off);
                let p = time_parts(t, off);
                assert_eq!(
                    (p.hour, p.minute, p.weekday),
                    (dt.hour(), dt.minute(), short(dt.weekday())),
                    "{t}"
                );
            }
            t += 7_654_321;
        }
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let max = UtcOffset::from_hms(25, 59, 59).unwrap();
        let _ = time_parts(i64::MAX, max);
        let p = time_parts(i64::MIN, UtcOffset::from_hms(-25, -59, -59).unwrap());
        assert!(p.hour < 24 && p.minute < 60);
    }
}
