//! Freeze windows: times, declared per environment in the pipeline file, when deployments are
//! held as if the environment were paused — every week (`Fri 16:00` to `Mon 08:00`) or once
//! (`2026-12-24 00:00` to `2027-01-02 00:00`), in a named time zone, so a window follows the
//! local clock across daylight-saving changes.

use jiff::Timestamp;
use jiff::civil::{DateTime, Weekday};
use jiff::tz::TimeZone;
use serde::Deserialize;
use time::OffsetDateTime;

/// A window as written in the pipeline file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeSpec {
    /// Start: `Fri 16:00` (weekly) or `2026-12-24 00:00` (once).
    pub from: String,
    /// End (exclusive), of the same form as `from`.
    pub to: String,
    /// An IANA time zone, e.g. `Europe/London` (default `UTC`).
    #[serde(default = "utc")]
    pub timezone: String,
    /// Why, shown with every request it holds.
    #[serde(default)]
    pub reason: Option<String>,
}

fn utc() -> String {
    "UTC".into()
}

/// One end of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    /// A weekday and a time of day, every week.
    Weekly(Weekday, jiff::civil::Time),
    /// A date and a time of day, once.
    Once(DateTime),
}

/// A validated freeze window.
#[derive(Debug, Clone, PartialEq)]
pub struct FreezeWindow {
    from: Point,
    to: Point,
    zone: TimeZone,
    spec: FreezeSpec,
}

/// Whether a window holds deployments at a moment, and until when.
#[derive(Debug, Clone, PartialEq)]
pub struct Frozen {
    /// When the window closes (deployments may go again).
    pub until: OffsetDateTime,
    /// "frozen from Fri 16:00 to Mon 08:00 Europe/London: release weekend".
    pub reason: String,
}

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

fn parse_point(raw: &str) -> Result<Point, String> {
    let raw = raw.trim();
    let bad = || {
        format!(
            "{raw:?} is neither a weekly time like \"Fri 16:00\" nor a date and time like \"2026-12-24 00:00\""
        )
    };
    let (first, rest) = raw.split_once([' ', 'T']).ok_or_else(bad)?;
    let time: jiff::civil::Time = rest.trim().parse().map_err(|_| bad())?;
    if let Some(day) = weekday(first) {
        return Ok(Point::Weekly(day, time));
    }
    let date: jiff::civil::Date = first.parse().map_err(|_| bad())?;
    Ok(Point::Once(date.to_datetime(time)))
}

/// Minutes since Monday 00:00 of a weekly point or a civil moment.
fn week_minute(day: Weekday, time: jiff::civil::Time) -> i32 {
    let day = i32::from(day.to_monday_zero_offset());
    day * 24 * 60 + i32::from(time.hour()) * 60 + i32::from(time.minute())
}

fn to_time(ts: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ts.as_nanosecond())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn to_timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_nanosecond(t.unix_timestamp_nanos()).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl FreezeWindow {
    /// Check a window from the pipeline file.
    pub fn parse(spec: &FreezeSpec) -> Result<Self, String> {
        let zone = TimeZone::get(&spec.timezone)
            .map_err(|_| format!("{:?} is not a known IANA time zone", spec.timezone))?;
        let (from, to) = (parse_point(&spec.from)?, parse_point(&spec.to)?);
        match (from, to) {
            (Point::Weekly(..), Point::Weekly(..)) if from == to => {
                Err("from and to are the same moment: the window would be empty".into())
            }
            (Point::Once(a), Point::Once(b)) if a >= b => {
                Err(format!("{:?} is not before {:?}", spec.from, spec.to))
            }
            (Point::Weekly(..), Point::Once(_)) | (Point::Once(_), Point::Weekly(..)) => Err(
                "from and to must be both weekly (\"Fri 16:00\") or both dates (\"2026-12-24 00:00\")"
                    .into(),
            ),
            _ => Ok(Self {
                from,
                to,
                zone,
                spec: spec.clone(),
            }),
        }
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "frozen from {} to {} {}",
            self.spec.from.trim(),
            self.spec.to.trim(),
            self.spec.timezone
        );
        if let Some(reason) = self.spec.reason.as_deref().filter(|r| !r.is_empty()) {
            s.push_str(&format!(": {reason}"));
        }
        s
    }

    /// Whether the window is open at `at`, and until when.
    pub fn frozen_at(&self, at: OffsetDateTime) -> Option<Frozen> {
        let now = to_timestamp(at).to_zoned(self.zone.clone());
        let civil = now.datetime();
        let until = match (self.from, self.to) {
            (Point::Once(from), Point::Once(to)) => {
                if civil < from || civil >= to {
                    return None;
                }
                to
            }
            (Point::Weekly(fd, ft), Point::Weekly(td, tt)) => {
                let (from, to) = (week_minute(fd, ft), week_minute(td, tt));
                let here = week_minute(civil.weekday(), civil.time());
                let inside = if from < to {
                    here >= from && here < to
                } else {
                    here >= from || here < to
                };
                if !inside {
                    return None;
                }
                // The next `to`: whole minutes ahead on the local clock (civil arithmetic, so a
                // daylight-saving change in between does not move it).
                let ahead = (to - here).rem_euclid(7 * 24 * 60);
                let minute =
                    civil
                        .date()
                        .to_datetime(jiff::civil::time(civil.hour(), civil.minute(), 0, 0));
                minute
                    .checked_add(jiff::Span::new().minutes(i64::from(ahead)))
                    .ok()?
            }
            _ => return None,
        };
        let until = until
            .to_zoned(self.zone.clone())
            .map(|z| to_time(z.timestamp()))
            .ok()?;
        Some(Frozen {
            until,
            reason: self.describe(),
        })
    }
}

/// The first of `windows` open at `at`.
pub fn frozen(windows: &[FreezeWindow], at: OffsetDateTime) -> Option<Frozen> {
    windows.iter().find_map(|w| w.frozen_at(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn window(from: &str, to: &str, tz: &str) -> FreezeWindow {
        FreezeWindow::parse(&FreezeSpec {
            from: from.into(),
            to: to.into(),
            timezone: tz.into(),
            reason: Some("release weekend".into()),
        })
        .unwrap()
    }

    #[test]
    fn a_weekend_window_holds_from_friday_afternoon_to_monday_morning_local_time() {
        let w = window("Fri 16:00", "Mon 08:00", "Europe/London");
        // 2026-12-04 is a Friday; London is on GMT in December.
        assert_eq!(w.frozen_at(datetime!(2026-12-04 15:59 UTC)), None);
        let f = w.frozen_at(datetime!(2026-12-04 16:00 UTC)).unwrap();
        assert_eq!(f.until, datetime!(2026-12-07 08:00 UTC));
        assert_eq!(
            f.reason,
            "frozen from Fri 16:00 to Mon 08:00 Europe/London: release weekend"
        );
        assert_eq!(
            w.frozen_at(datetime!(2026-12-06 23:00 UTC)).unwrap().until,
            datetime!(2026-12-07 08:00 UTC)
        );
        assert_eq!(w.frozen_at(datetime!(2026-12-07 08:00 UTC)), None);
        assert_eq!(w.frozen_at(datetime!(2026-12-09 12:00 UTC)), None);
        // In July London is on BST: the window opens at 15:00 UTC.
        assert!(w.frozen_at(datetime!(2026-07-03 15:00 UTC)).is_some());
        assert_eq!(
            w.frozen_at(datetime!(2026-07-03 15:00 UTC)).unwrap().until,
            datetime!(2026-07-06 07:00 UTC)
        );
        assert!(w.frozen_at(datetime!(2026-07-03 14:59 UTC)).is_none());
    }

    #[test]
    fn a_window_within_one_day_and_a_one_off_window() {
        let w = window("Wed 12:00", "Wed 14:00", "UTC");
        assert!(w.frozen_at(datetime!(2026-12-02 13:00 UTC)).is_some());
        assert_eq!(
            w.frozen_at(datetime!(2026-12-02 13:00 UTC)).unwrap().until,
            datetime!(2026-12-02 14:00 UTC)
        );
        assert!(w.frozen_at(datetime!(2026-12-02 14:00 UTC)).is_none());
        let once = window("2026-12-24 00:00", "2027-01-02T00:00", "Europe/Berlin");
        assert!(once.frozen_at(datetime!(2026-12-23 22:59 UTC)).is_none());
        assert_eq!(
            once.frozen_at(datetime!(2026-12-23 23:00 UTC))
                .unwrap()
                .until,
            datetime!(2027-01-01 23:00 UTC)
        );
        assert!(once.frozen_at(datetime!(2027-01-01 23:00 UTC)).is_none());
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        let parse = |from: &str, to: &str, tz: &str| {
            FreezeWindow::parse(&FreezeSpec {
                from: from.into(),
                to: to.into(),
                timezone: tz.into(),
                reason: None,
            })
            .unwrap_err()
        };
        assert!(parse("Fri 16:00", "Mon 08:00", "Mars/Olympus").contains("time zone"));
        assert!(parse("Friday at four", "Mon 08:00", "UTC").contains("weekly time"));
        assert!(parse("Fri 16:00", "2027-01-01 00:00", "UTC").contains("both"));
        assert!(parse("2027-01-02 00:00", "2027-01-01 00:00", "UTC").contains("not before"));
        assert!(parse("Fri 16:00", "Fri 16:00", "UTC").contains("empty"));
        assert!(parse("Fri 25:00", "Mon 08:00", "UTC").contains("weekly time"));
    }
}
