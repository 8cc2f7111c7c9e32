//! Which snapshots to keep: restic's `forget` policy, rule for rule.
//!
//! sbk users often know restic, so a policy written for one should keep the same snapshots,
//! for the same stated reasons, in the other. This follows restic's `ApplyPolicy` and
//! `ParseDuration` as of its master branch (`internal/data/snapshot_policy.go` and
//! `duration.go`, after 0.17.4), Go's `time.AddDate` included, and its manual
//! (`doc/060_forget.rst`).
//!
//! Left to the caller, as restic's `forget` command does them: grouping (by host, source,
//! tags; the policy applies to each group separately), refusing an empty policy
//! ([`Policy::is_empty`]), and refusing to remove every snapshot of a group.
//!
//! Where sbk departs from restic, only at the edges:
//! - times carry a fixed offset. restic parses a snapshot whose offset matches the host's zone
//!   into that zone, so its `--keep-within` arithmetic can move by the DST hour depending on
//!   the machine `forget` runs on; here it is always done in the newest snapshot's own offset;
//! - restic's `time.Duration` wraps past 2,562,047 hours; here hours are exact;
//! - restic panics on a duration number that overflows; here that is [`SpanError::OutOfRange`].

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, FixedOffset, Timelike, Utc};

/// A calendar span as `--keep-within*` takes it (`1y5m7d2h`): years, months and days are
/// calendar steps (Go's `AddDate`), hours are exact hours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub years: i32,
    pub months: i32,
    pub days: i32,
    pub hours: i32,
}

impl Span {
    /// A zero span switches its rule off, as in restic.
    pub fn is_zero(&self) -> bool {
        self.years == 0 && self.months == 0 && self.days == 0 && self.hours == 0
    }
}

/// Why a span did not parse. The wording is restic's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    #[error("no number found")]
    NoNumber,
    #[error("no unit found after number {0}")]
    NoUnit(i32),
    #[error("invalid unit {unit:?} found after number {number}")]
    InvalidUnit { unit: char, number: i32 },
    /// restic panics here.
    #[error("number {0} is out of range")]
    OutOfRange(String),
    /// restic's parser takes negative numbers and its `forget` then refuses them; refused here.
    #[error("durations containing negative values are not allowed")]
    Negative,
}

impl FromStr for Span {
    type Err = SpanError;

    /// restic's grammar: `(-?[0-9]+[ymdh])*` after trimming whitespace; a repeated unit
    /// overwrites the earlier one, and the empty string is the zero span. Negative fields
    /// (after overwriting) are refused, as restic's `forget` does.
    fn from_str(s: &str) -> Result<Self, SpanError> {
        let mut span = Span::default();
        let mut rest = s.trim();
        while !rest.is_empty() {
            let (negative, body) = match rest.strip_prefix('-') {
                Some(body) => (true, body),
                None => (false, rest),
            };
            let end = body
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(body.len());
            if end == 0 {
                return Err(SpanError::NoNumber);
            }
            let text = &rest[..rest.len() - body.len() + end];
            let magnitude: i64 = body[..end]
                .parse()
                .map_err(|_| SpanError::OutOfRange(text.to_string()))?;
            let value = if negative { -magnitude } else { magnitude };
            let number =
                i32::try_from(value).map_err(|_| SpanError::OutOfRange(text.to_string()))?;
            let Some(unit) = body[end..].chars().next() else {
                return Err(SpanError::NoUnit(number));
            };
            match unit {
                'y' => span.years = number,
                'm' => span.months = number,
                'd' => span.days = number,
                'h' => span.hours = number,
                _ => return Err(SpanError::InvalidUnit { unit, number }),
            }
            rest = &body[end + unit.len_utf8()..];
        }
        if span.years < 0 || span.months < 0 || span.days < 0 || span.hours < 0 {
            return Err(SpanError::Negative);
        }
        Ok(span)
    }
}

impl fmt::Display for Span {
    /// restic's form: non-zero fields only, so the zero span prints as nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (value, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if value != 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

/// How many buckets a `--keep-{last,hourly,...}` rule keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Count {
    /// Rule not used (`Limit(0)` means the same).
    #[default]
    Off,
    Limit(u32),
    /// restic's `unlimited`, formerly `-1`: one snapshot per bucket, all the way back.
    Unlimited,
}

impl Count {
    /// restic's integer: 0 off, -1 unlimited.
    fn as_go(self) -> i64 {
        match self {
            Count::Off => 0,
            Count::Limit(n) => i64::from(n),
            Count::Unlimited => -1,
        }
    }

    fn is_off(self) -> bool {
        self.as_go() == 0
    }
}

/// Why a count did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CountError {
    #[error("invalid count {0:?}: expected a number or 'unlimited'")]
    Invalid(String),
    #[error("negative values other than -1 are not allowed")]
    Negative,
    #[error("count {0} is too large")]
    TooLarge(String),
}

impl FromStr for Count {
    type Err = CountError;

    /// A non-negative integer, `unlimited` (restic ≥ 0.17) or `-1` (older restic).
    fn from_str(s: &str) -> Result<Self, CountError> {
        if s == "unlimited" {
            return Ok(Count::Unlimited);
        }
        let n: i64 = s.parse().map_err(|_| CountError::Invalid(s.to_string()))?;
        match n {
            -1 => Ok(Count::Unlimited),
            n if n < 0 => Err(CountError::Negative),
            0 => Ok(Count::Off),
            n => u32::try_from(n)
                .map(Count::Limit)
                .map_err(|_| CountError::TooLarge(s.to_string())),
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Off => f.write_str("0"),
            Count::Limit(n) => write!(f, "{n}"),
            Count::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// A `forget` policy: a snapshot is kept when any rule keeps it.
///
/// A `within*` span of `None` or zero is off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--keep-last`, then `--keep-hourly` to `--keep-yearly`: the newest snapshot of each of
    /// the newest N hours, days, ISO weeks, ... that have one (in each snapshot's own offset).
    pub last: Count,
    pub hourly: Count,
    pub daily: Count,
    pub weekly: Count,
    pub monthly: Count,
    pub yearly: Count,
    /// Keep everything newer than the newest snapshot minus this span.
    pub within: Option<Span>,
    /// Within their span, keep the newest snapshot of each hour/day/week/month/year.
    pub within_hourly: Option<Span>,
    pub within_daily: Option<Span>,
    pub within_weekly: Option<Span>,
    pub within_monthly: Option<Span>,
    pub within_yearly: Option<Span>,
    /// Keep snapshots holding all tags of any one list (see [`parse_tag_list`]); not counted.
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    /// No rule set. restic (since 0.17) refuses such a policy; [`apply`] given one keeps nothing,
    /// as restic's `ApplyPolicy` now does, so the caller must refuse it first.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
            && self.counts().iter().all(|(count, _)| count.is_off())
            && self.spans().iter().all(|(span, _)| !active(*span))
    }

    fn counts(&self) -> [(Count, &'static str); 6] {
        [
            (self.last, "latest"),
            (self.hourly, "hourly"),
            (self.daily, "daily"),
            (self.weekly, "weekly"),
            (self.monthly, "monthly"),
            (self.yearly, "yearly"),
        ]
    }

    fn spans(&self) -> [(Option<Span>, &'static str); 6] {
        [
            (self.within, ""),
            (self.within_hourly, "hourly"),
            (self.within_daily, "daily"),
            (self.within_weekly, "weekly"),
            (self.within_monthly, "monthly"),
            (self.within_yearly, "yearly"),
        ]
    }
}

impl fmt::Display for Policy {
    /// restic's summary line, e.g. `keep 7 daily, 4 weekly snapshots`; `remove` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keeps: Vec<String> = self
            .counts()
            .iter()
            .filter_map(|(count, what)| match count.as_go() {
                0 => None,
                -1 => Some(format!("all {what}")),
                n => Some(format!("{n} {what}")),
            })
            .collect();
        let windows: Vec<String> = self.spans()[1..]
            .iter()
            .filter_map(|(span, what)| {
                let span = span.filter(|s| !s.is_zero())?;
                Some(format!("{what} snapshots within {span}"))
            })
            .collect();
        let mut s = String::new();
        if !keeps.is_empty() {
            s = format!("{} snapshots", keeps.join(", "));
        }
        if !windows.is_empty() {
            if !s.is_empty() {
                s.push_str(", ");
            }
            s.push_str(&windows.join(", "));
        }
        if !self.tags.is_empty() {
            if !s.is_empty() {
                s.push_str(" and ");
            }
            let lists: Vec<String> = self.tags.iter().map(|l| tag_list(l)).collect();
            s.push_str(&format!("all snapshots with tags [{}]", lists.join(" ")));
        }
        if let Some(span) = self.within.filter(|s| !s.is_zero()) {
            if !s.is_empty() {
                s.push_str(" and ");
            }
            s.push_str(&format!("all snapshots within {span} of the newest"));
        }
        if s.is_empty() {
            f.write_str("remove")
        } else {
            write!(f, "keep {s}")
        }
    }
}

/// One `--keep-tag` value: comma-separated, whitespace trimmed around each tag. `""` gives the
/// list `[""]`, which matches untagged snapshots.
pub fn parse_tag_list(s: &str) -> Vec<String> {
    s.split(',').map(|t| t.trim().to_string()).collect()
}

/// A snapshot as the policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// Buckets (day, week, ...) are taken in this offset, the snapshot's own local time.
    pub time: DateTime<FixedOffset>,
    pub tags: &'a [String],
}

/// The decision for one candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Index into the slice given to [`apply`].
    pub index: usize,
    pub keep: bool,
    /// One per rule that keeps it, worded as restic words them; empty when removed.
    pub reasons: Vec<String>,
}

/// Applies `policy` with the current time (see [`apply_at`]).
pub fn apply(policy: &Policy, candidates: &[Candidate<'_>]) -> Vec<Verdict> {
    apply_at(policy, candidates, Utc::now())
}

/// Decides every candidate, newest first (equal times: lower index first, as restic's stable
/// sort does with its list).
///
/// `now` matters only to `within*` rules: as in restic, they measure back from the newest
/// snapshot that is before `now`, so a snapshot with a clock-skewed future time cannot push
/// the window past the real ones. If none is, they measure from Go's zero time (year 1), so
/// everything is within.
pub fn apply_at(policy: &Policy, candidates: &[Candidate<'_>], now: DateTime<Utc>) -> Vec<Verdict> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| candidates[b].time.cmp(&candidates[a].time));

    let now = nanos(now.timestamp(), now.timestamp_subsec_nanos());
    let mut latest = (nanos(GO_ZERO_TIME_UNIX, 0), Wall::GO_ZERO);
    for &i in &order {
        let time = &candidates[i].time;
        let t = instant(time);
        if t > latest.0 && t < now {
            latest = (t, Wall::of(time));
        }
    }
    let latest = latest.1;

    let within = policy
        .within
        .filter(|s| !s.is_zero())
        .map(|span| (span, cutoff(latest, span)));
    let mut counted = [
        (policy.last, Bucket::Last, "last snapshot"),
        (policy.hourly, Bucket::Hour, "hourly snapshot"),
        (policy.daily, Bucket::Day, "daily snapshot"),
        (policy.weekly, Bucket::Week, "weekly snapshot"),
        (policy.monthly, Bucket::Month, "monthly snapshot"),
        (policy.yearly, Bucket::Year, "yearly snapshot"),
    ]
    .map(|(count, bucket, reason)| Counted {
        left: count.as_go(),
        last: -1,
        bucket,
        reason,
    });
    let mut windowed: Vec<Windowed> = [
        (policy.within_hourly, Bucket::Hour, "hourly within"),
        (policy.within_daily, Bucket::Day, "daily within"),
        (policy.within_weekly, Bucket::Week, "weekly within"),
        (policy.within_monthly, Bucket::Month, "monthly within"),
        (policy.within_yearly, Bucket::Year, "yearly within"),
    ]
    .into_iter()
    .filter_map(|(span, bucket, reason)| {
        let span = span.filter(|s| !s.is_zero())?;
        Some(Windowed {
            span,
            cutoff: cutoff(latest, span),
            last: -1,
            bucket,
            reason,
        })
    })
    .collect();

    let n = order.len();
    order
        .iter()
        .enumerate()
        .map(|(nr, &index)| {
            let cand = &candidates[index];
            let t = instant(&cand.time);
            // restic also keeps the oldest snapshot for any rule with counts left, so that
            // the kept history reaches as far back as it can.
            let oldest = nr + 1 == n;
            let mut reasons = Vec::new();
            for list in &policy.tags {
                if has_tags(cand.tags, list) {
                    reasons.push(format!("has tags {}", tag_list(list)));
                }
            }
            if let Some((span, cut)) = within {
                if t > cut {
                    reasons.push(format!("within {span}"));
                }
            }
            for rule in &mut counted {
                if rule.left > 0 || rule.left == -1 {
                    let key = rule.bucket.key(&cand.time, nr);
                    if key != rule.last || oldest {
                        let prefix = if key == rule.last { "oldest " } else { "" };
                        reasons.push(format!("{prefix}{}", rule.reason));
                        rule.last = key;
                        if rule.left > 0 {
                            rule.left -= 1;
                        }
                    }
                }
            }
            for rule in &mut windowed {
                if t > rule.cutoff {
                    let key = rule.bucket.key(&cand.time, nr);
                    if key != rule.last || oldest {
                        let prefix = if key == rule.last { "oldest " } else { "" };
                        reasons.push(format!("{prefix}{} {}", rule.reason, rule.span));
                        rule.last = key;
                    }
                }
            }
            Verdict {
                index,
                keep: !reasons.is_empty(),
                reasons,
            }
        })
        .collect()
}

fn active(span: Option<Span>) -> bool {
    span.is_some_and(|s| !s.is_zero())
}

/// restic's `TagList.String()`: `[a, b]`.
fn tag_list(list: &[String]) -> String {
    format!("[{}]", list.join(", "))
}

/// restic's `Snapshot.HasTags`: all tags of `list`, except that an empty tag met before any
/// missing one matches an untagged snapshot (so `--keep-tag ''` keeps untagged snapshots).
fn has_tags(tags: &[String], list: &[String]) -> bool {
    for tag in list {
        if tag.is_empty() && tags.is_empty() {
            return true;
        }
        if !tags.contains(tag) {
            return false;
        }
    }
    true
}

/// A count rule's state: restic's bucket struct.
struct Counted {
    /// Buckets still to keep; -1 for unlimited.
    left: i64,
    /// Bucket of the last snapshot kept; -1 before any, as in restic (where, too, a first
    /// snapshot in year -1 thus opens no yearly bucket).
    last: i64,
    bucket: Bucket,
    reason: &'static str,
}

/// A `within-<bucket>` rule's state.
struct Windowed {
    span: Span,
    cutoff: i128,
    last: i64,
    bucket: Bucket,
    reason: &'static str,
}

#[derive(Clone, Copy)]
enum Bucket {
    Last,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Bucket {
    /// restic's `always`/`ymdh`/`ymd`/`yw`/`ym`/`y`, in the snapshot's own offset; weeks are
    /// ISO weeks of the ISO year.
    fn key(self, t: &DateTime<FixedOffset>, nr: usize) -> i64 {
        let year = i64::from(t.year());
        let month = i64::from(t.month());
        let day = i64::from(t.day());
        match self {
            Bucket::Last => i64::try_from(nr).unwrap_or(i64::MAX),
            Bucket::Hour => year * 1_000_000 + month * 10_000 + day * 100 + i64::from(t.hour()),
            Bucket::Day => year * 10_000 + month * 100 + day,
            Bucket::Week => {
                let week = t.iso_week();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            Bucket::Month => year * 100 + month,
            Bucket::Year => year,
        }
    }
}

const NANOS_PER_SEC: i128 = 1_000_000_000;
/// Go's zero `time.Time`, 0001-01-01 00:00:00 UTC, in Unix seconds.
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

fn nanos(secs: i64, subsec: u32) -> i128 {
    i128::from(secs) * NANOS_PER_SEC + i128::from(subsec)
}

/// Nanoseconds since the Unix epoch: wide enough that no span arithmetic can overflow.
fn instant(t: &DateTime<FixedOffset>) -> i128 {
    nanos(t.timestamp(), t.timestamp_subsec_nanos())
}

/// A time's wall-clock reading in its own offset: what Go's `Date()` and `Clock()` return.
#[derive(Clone, Copy)]
struct Wall {
    year: i64,
    month0: i64,
    day: i64,
    secs_of_day: i64,
    nanos: i64,
    offset: i64,
}

impl Wall {
    const GO_ZERO: Wall = Wall {
        year: 1,
        month0: 0,
        day: 1,
        secs_of_day: 0,
        nanos: 0,
        offset: 0,
    };

    fn of(t: &DateTime<FixedOffset>) -> Wall {
        Wall {
            year: i64::from(t.year()),
            month0: i64::from(t.month0()),
            day: i64::from(t.day()),
            secs_of_day: i64::from(t.num_seconds_from_midnight()),
            nanos: i64::from(t.nanosecond()),
            offset: i64::from(t.offset().local_minus_utc()),
        }
    }
}

/// Go's `t.AddDate(-years, -months, -days).Add(-hours * time.Hour)`, in nanoseconds since the
/// Unix epoch: months overflow into years, then the day is counted from the 1st of the
/// month, so March 31 minus a month is "February 31", i.e. March 3 (March 2 in leap years).
fn cutoff(base: Wall, span: Span) -> i128 {
    let months = base.month0 - i64::from(span.months);
    let year = base.year - i64::from(span.years) + months.div_euclid(12);
    let month = months.rem_euclid(12) + 1;
    let days = days_from_civil(year, month) + (base.day - i64::from(span.days) - 1);
    let local = i128::from(days) * 86_400 + i128::from(base.secs_of_day);
    (local - i128::from(base.offset)) * NANOS_PER_SEC + i128::from(base.nanos)
        - i128::from(span.hours) * 3_600 * NANOS_PER_SEC
}

/// Days from 1970-01-01 to the 1st of `month` (1-12) of proleptic Gregorian `year`
/// (H. Hinnant's `days_from_civil`); exact for any year an i32 span can reach.
fn days_from_civil(year: i64, month: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let march_based = (month + 9) % 12;
    let day_of_year = (153 * march_based + 2) / 5;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDate, TimeZone};
    use proptest::prelude::*;

    fn at(offset_secs: i32, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<FixedOffset> {
        FixedOffset::east_opt(offset_secs)
            .unwrap()
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32) -> DateTime<FixedOffset> {
        at(0, y, mo, d, h, 0)
    }

    fn far_future() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0).unwrap()
    }

    fn span(s: &str) -> Span {
        s.parse().unwrap()
    }

    fn ymdh(years: i32, months: i32, days: i32, hours: i32) -> Span {
        Span {
            years,
            months,
            days,
            hours,
        }
    }

    fn untagged(times: &[DateTime<FixedOffset>]) -> Vec<Candidate<'static>> {
        times
            .iter()
            .map(|&time| Candidate { time, tags: &[] })
            .collect()
    }

    /// Kept times, newest first.
    fn kept_times(policy: &Policy, cands: &[Candidate<'_>]) -> Vec<DateTime<FixedOffset>> {
        apply_at(policy, cands, far_future())
            .into_iter()
            .filter(|v| v.keep)
            .map(|v| cands[v.index].time)
            .collect()
    }

    fn reasons_of(verdicts: &[Verdict], index: usize) -> Vec<&str> {
        let v = verdicts.iter().find(|v| v.index == index).unwrap();
        v.reasons.iter().map(String::as_str).collect()
    }

    // ---- Span and Count parsing ----

    #[test]
    fn span_parses_restic_syntax() {
        let full = ymdh(1, 5, 7, 2);
        assert_eq!(span("1y5m7d2h"), full);
        assert_eq!(span("2h7d5m1y"), full);
        assert_eq!(span(" 1y5m7d2h\n"), full);
        assert_eq!(span("2d"), ymdh(0, 0, 2, 0));
        assert_eq!(span("36h"), ymdh(0, 0, 0, 36));
        assert_eq!(span("1d2d"), ymdh(0, 0, 2, 0));
        assert_eq!(span("007d"), ymdh(0, 0, 7, 0));
        // A negative value overwritten by a later one passes, as in restic.
        assert_eq!(span("-1d2d"), ymdh(0, 0, 2, 0));
        assert!(span("").is_zero());
        assert!(span("0d").is_zero());
        assert!(span("-0d").is_zero());
        assert_eq!(full.to_string(), "1y5m7d2h");
        assert_eq!(span("36h").to_string(), "36h");
        assert_eq!(Span::default().to_string(), "");
    }

    #[test]
    fn span_rejects_bad_input() {
        let err = |s: &str| s.parse::<Span>().unwrap_err();
        assert_eq!(err("5"), SpanError::NoUnit(5));
        assert_eq!(err("1d5"), SpanError::NoUnit(5));
        assert_eq!(err("d"), SpanError::NoNumber);
        assert_eq!(err("-"), SpanError::NoNumber);
        assert_eq!(err("1d 2h"), SpanError::NoNumber);
        for (input, unit, number) in [
            ("1w", 'w', 1),
            ("1.5d", '.', 1),
            ("1D", 'D', 1),
            ("3é", 'é', 3),
        ] {
            assert_eq!(err(input), SpanError::InvalidUnit { unit, number });
        }
        assert_eq!(err("-1d"), SpanError::Negative);
        assert_eq!(err("1y-2m"), SpanError::Negative);
        assert_eq!(
            err("2147483648h"),
            SpanError::OutOfRange("2147483648".into())
        );
        assert_eq!(
            err("99999999999999999999999d"),
            SpanError::OutOfRange("99999999999999999999999".into())
        );
        assert_eq!(
            err("1w").to_string(),
            "invalid unit 'w' found after number 1"
        );
        assert_eq!(err("5").to_string(), "no unit found after number 5");
        assert_eq!(err("x").to_string(), "no number found");
        assert_eq!(span("2147483647h").hours, i32::MAX);
    }

    #[test]
    fn count_parses_unlimited_and_minus_one() {
        assert_eq!("unlimited".parse::<Count>(), Ok(Count::Unlimited));
        assert_eq!("-1".parse::<Count>(), Ok(Count::Unlimited));
        assert_eq!("0".parse::<Count>(), Ok(Count::Off));
        assert_eq!("7".parse::<Count>(), Ok(Count::Limit(7)));
        assert_eq!("-2".parse::<Count>(), Err(CountError::Negative));
        assert!(matches!("x".parse::<Count>(), Err(CountError::Invalid(_))));
        assert!(matches!("".parse::<Count>(), Err(CountError::Invalid(_))));
        assert!(matches!(
            "4294967296".parse::<Count>(),
            Err(CountError::TooLarge(_))
        ));
        assert_eq!(Count::Unlimited.to_string(), "unlimited");
        assert_eq!(Count::Limit(3).to_string(), "3");
    }

    #[test]
    fn tag_lists_and_policy_text() {
        assert_eq!(parse_tag_list("a, b ,c"), vec!["a", "b", "c"]);
        assert_eq!(parse_tag_list(""), vec![""]);
        let p = Policy {
            daily: Count::Limit(7),
            weekly: Count::Limit(4),
            monthly: Count::Unlimited,
            ..Policy::default()
        };
        assert_eq!(
            p.to_string(),
            "keep 7 daily, 4 weekly, all monthly snapshots"
        );
        let p = Policy {
            last: Count::Limit(2),
            within_daily: Some(span("7d")),
            tags: vec![parse_tag_list("a,b"), parse_tag_list("c")],
            within: Some(span("1y2m")),
            ..Policy::default()
        };
        assert_eq!(
            p.to_string(),
            "keep 2 latest snapshots, daily snapshots within 7d and all snapshots with tags \
             [[a, b] [c]] and all snapshots within 1y2m of the newest"
        );
        assert_eq!(Policy::default().to_string(), "remove");
    }

    #[test]
    fn empty_policy() {
        assert!(Policy::default().is_empty());
        let zeroes = Policy {
            daily: Count::Limit(0),
            within: Some(Span::default()),
            within_weekly: Some(Span::default()),
            ..Policy::default()
        };
        assert!(zeroes.is_empty());
        for p in [
            Policy {
                last: Count::Unlimited,
                ..Policy::default()
            },
            Policy {
                yearly: Count::Limit(1),
                ..Policy::default()
            },
            Policy {
                within_yearly: Some(span("1h")),
                ..Policy::default()
            },
            Policy {
                tags: vec![vec![]],
                ..Policy::default()
            },
        ] {
            assert!(!p.is_empty(), "{p:?}");
        }
        // restic's current ApplyPolicy keeps nothing for an empty policy (its CLI refuses one).
        let cands = untagged(&[utc(2024, 1, 1, 0), utc(2024, 1, 2, 0)]);
        let verdicts = apply_at(&zeroes, &cands, far_future());
        assert_eq!(verdicts.len(), 2);
        assert!(verdicts.iter().all(|v| !v.keep && v.reasons.is_empty()));
        assert!(apply(&Policy::default(), &[]).is_empty());
    }

    // ---- Golden cases from restic's doc/060_forget.rst ----

    /// "one backup every Sunday for 12 weeks", then `forget --keep-daily 4`.
    #[test]
    fn doc_twelve_sundays_keep_daily_4() {
        // 2019-09-01 11:00 .. 2019-11-17 11:00.
        let sundays: Vec<_> = (0..12)
            .map(|week| utc(2019, 9, 1, 11) + Duration::weeks(week))
            .collect();
        let cands = untagged(&sundays);
        let policy = Policy {
            daily: Count::Limit(4),
            ..Policy::default()
        };
        // The doc shows the older "keep the last 4 daily snapshots"; this is today's wording.
        assert_eq!(policy.to_string(), "keep 4 daily snapshots");
        assert_eq!(
            kept_times(&policy, &cands),
            [(11, 17), (11, 10), (11, 3), (10, 27)].map(|(m, d)| utc(2019, m, d, 11))
        );
        let verdicts = apply_at(&policy, &cands, far_future());
        let kept: Vec<usize> = verdicts
            .iter()
            .filter(|v| v.keep)
            .map(|v| v.index)
            .collect();
        assert_eq!(kept, vec![11, 10, 9, 8]);
        for v in verdicts.iter().filter(|v| v.keep) {
            assert_eq!(v.reasons, vec!["daily snapshot"]);
        }
    }

    /// "suppose you make one backup every day for 100 years. Then `forget --keep-daily 7
    /// --keep-weekly 5 --keep-monthly 12 --keep-yearly 75` would keep the most recent 7 daily
    /// snapshots and 4 last-day-of-the-week ones (since the 7 dailies already include 1
    /// weekly). Additionally, 12 or 11 last-day-of-the-month snapshots [...] And finally 75
    /// or 74 last-day-of-the-year snapshots". Ending on Sunday 2019-11-17 (so that the 7
    /// dailies are exactly one ISO week), the monthly overlap is 1 (November's) and the yearly
    /// overlap is 2 (2019's is the newest, 2018's is December's monthly): the doc's "75 or
    /// 74" is loose by one here.
    #[test]
    fn doc_daily_for_a_hundred_years() {
        let last = NaiveDate::from_ymd_opt(2019, 11, 17).unwrap();
        let first = NaiveDate::from_ymd_opt(1919, 11, 18).unwrap();
        let mut times = Vec::new();
        let mut day = first;
        while day <= last {
            times.push(
                Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).unwrap())
                    .fixed_offset(),
            );
            day = day.succ_opt().unwrap();
        }
        let cands = untagged(&times);
        let policy = Policy {
            daily: Count::Limit(7),
            weekly: Count::Limit(5),
            monthly: Count::Limit(12),
            yearly: Count::Limit(75),
            ..Policy::default()
        };
        let verdicts = apply_at(&policy, &cands, far_future());
        let count = |reason: &str| {
            verdicts
                .iter()
                .filter(|v| v.reasons.iter().any(|r| r == reason))
                .count()
        };
        assert_eq!(count("daily snapshot"), 7);
        assert_eq!(count("weekly snapshot"), 5);
        assert_eq!(count("monthly snapshot"), 12);
        assert_eq!(count("yearly snapshot"), 75);
        let only = |reason: &str| {
            verdicts
                .iter()
                .filter(|v| v.reasons.len() == 1 && v.reasons[0] == reason)
                .count()
        };
        assert_eq!(only("weekly snapshot"), 4);
        assert_eq!(only("monthly snapshot"), 10); // Oct 2019 .. Jan 2019
        assert_eq!(only("yearly snapshot"), 73); // 2017 .. 1945
        assert_eq!(verdicts.iter().filter(|v| v.keep).count(), 7 + 4 + 11 + 73);
        let oldest_yearly = cands[verdicts.iter().rfind(|v| v.keep).unwrap().index].time;
        assert_eq!(oldest_yearly, utc(1945, 12, 31, 12));
    }

    // ---- The seed schedule ----

    /// Every six hours (00, 06, 12, 18 at +01:00) for 400 days, 2024-02-07 .. 2025-03-12 (a
    /// Wednesday), with keep-daily 7, keep-weekly 4, keep-monthly 12. By hand:
    /// - daily: the 18:00 of Mar 12, 11, 10, 9, 8, 7, 6;
    /// - weekly (ISO weeks, Monday first): Mar 10-16 -> Mar 12 and Mar 3-9 -> Mar 9 (both
    ///   daily already), Feb 24-Mar 2 -> Mar 2, Feb 17-23 -> Feb 23;
    /// - monthly: Mar 12 (daily already), then the last day of Feb 2025 back to Apr 2024;
    /// - all counts are used up before the oldest snapshot, so it goes.
    #[test]
    fn seed_schedule() {
        let first = at(3600, 2024, 2, 7, 0, 0);
        let times: Vec<_> = (0..400 * 4)
            .map(|i| first + Duration::hours(6 * i))
            .collect();
        assert_eq!(*times.last().unwrap(), at(3600, 2025, 3, 12, 18, 0));
        let cands = untagged(&times);
        let policy = Policy {
            daily: Count::Limit(7),
            weekly: Count::Limit(4),
            monthly: Count::Limit(12),
            ..Policy::default()
        };
        let evening = |y, m, d| at(3600, y, m, d, 18, 0);
        let expected = vec![
            evening(2025, 3, 12),
            evening(2025, 3, 11),
            evening(2025, 3, 10),
            evening(2025, 3, 9),
            evening(2025, 3, 8),
            evening(2025, 3, 7),
            evening(2025, 3, 6),
            evening(2025, 3, 2),
            evening(2025, 2, 28),
            evening(2025, 2, 23),
            evening(2025, 1, 31),
            evening(2024, 12, 31),
            evening(2024, 11, 30),
            evening(2024, 10, 31),
            evening(2024, 9, 30),
            evening(2024, 8, 31),
            evening(2024, 7, 31),
            evening(2024, 6, 30),
            evening(2024, 5, 31),
            evening(2024, 4, 30),
        ];
        assert_eq!(kept_times(&policy, &cands), expected);

        let verdicts = apply_at(&policy, &cands, far_future());
        assert_eq!(
            reasons_of(&verdicts, cands.len() - 1),
            ["daily snapshot", "weekly snapshot", "monthly snapshot"]
        );
        let mar9 = times
            .iter()
            .position(|t| *t == evening(2025, 3, 9))
            .unwrap();
        assert_eq!(
            reasons_of(&verdicts, mar9),
            ["daily snapshot", "weekly snapshot"]
        );
        let feb23 = times
            .iter()
            .position(|t| *t == evening(2025, 2, 23))
            .unwrap();
        assert_eq!(reasons_of(&verdicts, feb23), ["weekly snapshot"]);
    }

    // ---- --keep-within ----

    #[test]
    fn keep_within_uses_go_month_end_normalisation() {
        // 2023-03-31 minus 1m is "2023-02-31" = 2023-03-03 (chrono would say Feb 28).
        let newest = utc(2023, 3, 31, 12);
        let cands = untagged(&[
            newest,
            utc(2023, 3, 3, 12) + Duration::seconds(1),
            utc(2023, 3, 3, 12), // exactly at the cutoff: not strictly after
            utc(2023, 3, 1, 0),
            utc(2023, 2, 28, 12),
        ]);
        let policy = Policy {
            within: Some(span("1m")),
            ..Policy::default()
        };
        let verdicts = apply_at(&policy, &cands, far_future());
        let kept: Vec<usize> = verdicts
            .iter()
            .filter(|v| v.keep)
            .map(|v| v.index)
            .collect();
        assert_eq!(kept, vec![0, 1]);
        assert_eq!(reasons_of(&verdicts, 0), ["within 1m"]);

        // Leap year: 2024-03-31 minus 1m = "2024-02-31" = 2024-03-02.
        let cands = untagged(&[utc(2024, 3, 31, 0), utc(2024, 3, 2, 1), utc(2024, 3, 1, 23)]);
        assert_eq!(
            kept_times(&policy, &cands),
            vec![utc(2024, 3, 31, 0), utc(2024, 3, 2, 1)]
        );

        // 2024-02-29 minus 1y = "2023-02-29" = 2023-03-01.
        let cands = untagged(&[
            utc(2024, 2, 29, 0),
            utc(2023, 3, 1, 1),
            utc(2023, 2, 28, 23),
        ]);
        let policy = Policy {
            within: Some(span("1y")),
            ..Policy::default()
        };
        assert_eq!(
            kept_times(&policy, &cands),
            vec![utc(2024, 2, 29, 0), utc(2023, 3, 1, 1)]
        );

        // Days and hours: 2y5m7d3h back from 2024-08-10 05:00 is 2022-03-03 02:00.
        let cands = untagged(&[utc(2024, 8, 10, 5), utc(2022, 3, 3, 3), utc(2022, 3, 3, 2)]);
        let policy = Policy {
            within: Some(span("2y5m7d3h")),
            ..Policy::default()
        };
        assert_eq!(
            kept_times(&policy, &cands),
            vec![utc(2024, 8, 10, 5), utc(2022, 3, 3, 3)]
        );
    }

    #[test]
    fn keep_within_counts_in_the_newest_snapshots_offset() {
        // 2023-04-01 00:30 +02:00 is 2023-03-31 22:30 UTC. In its own offset, minus 1m is
        // 2023-03-01 00:30 +02:00; done in UTC it would be "02-31" = 2023-03-03 22:30 UTC.
        let plus2 = 2 * 3600;
        let newest = at(plus2, 2023, 4, 1, 0, 30);
        let inside = at(plus2, 2023, 3, 1, 0, 31);
        let cands = untagged(&[newest, inside, at(plus2, 2023, 3, 1, 0, 30)]);
        let policy = Policy {
            within: Some(span("1m")),
            ..Policy::default()
        };
        assert_eq!(kept_times(&policy, &cands), vec![newest, inside]);
    }

    #[test]
    fn keep_within_ignores_future_snapshots_for_the_newest() {
        let now = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap();
        let cands = untagged(&[
            utc(2030, 1, 1, 0), // clock skew: kept (after the cutoff) but not the reference
            utc(2024, 5, 31, 0),
            utc(2024, 5, 30, 1),
            utc(2024, 5, 29, 23),
        ]);
        let policy = Policy {
            within: Some(span("1d")),
            ..Policy::default()
        };
        let kept: Vec<usize> = apply_at(&policy, &cands, now)
            .into_iter()
            .filter(|v| v.keep)
            .map(|v| v.index)
            .collect();
        assert_eq!(kept, vec![0, 1, 2]);
        // All in the future: measured from year 1, so everything is within.
        let past = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
        assert!(apply_at(&policy, &cands, past).iter().all(|v| v.keep));
    }

    #[test]
    fn keep_within_daily() {
        // Every six hours from 2024-05-01 00:00 to 2024-05-10 18:00, +05:30.
        let off = 19_800;
        let first = at(off, 2024, 5, 1, 0, 0);
        let times: Vec<_> = (0..40).map(|i| first + Duration::hours(6 * i)).collect();
        let cands = untagged(&times);
        // 3d back from May 10 18:00 is May 7 18:00: keep the newest of May 10, 9, 8 (18:00)
        // and of May 7 only what is strictly after 18:00 (nothing).
        let policy = Policy {
            within_daily: Some(span("3d")),
            ..Policy::default()
        };
        let verdicts = apply_at(&policy, &cands, far_future());
        let kept: Vec<_> = verdicts
            .iter()
            .filter(|v| v.keep)
            .map(|v| times[v.index])
            .collect();
        assert_eq!(
            kept,
            vec![
                at(off, 2024, 5, 10, 18, 0),
                at(off, 2024, 5, 9, 18, 0),
                at(off, 2024, 5, 8, 18, 0)
            ]
        );
        assert_eq!(reasons_of(&verdicts, 39), ["daily within 3d"]);

        // A window reaching past the oldest snapshot also keeps the oldest, marked so.
        let policy = Policy {
            within_daily: Some(span("1m")),
            ..Policy::default()
        };
        let verdicts = apply_at(&policy, &cands, far_future());
        assert_eq!(verdicts.iter().filter(|v| v.keep).count(), 10 + 1);
        assert_eq!(reasons_of(&verdicts, 0), ["oldest daily within 1m"]);
        assert_eq!(reasons_of(&verdicts, 3), ["daily within 1m"]);

        // Weekly and yearly windows, together.
        let policy = Policy {
            within_weekly: Some(span("5d")),
            within_yearly: Some(span("1y")),
            ..Policy::default()
        };
        let verdicts = apply_at(&policy, &cands, far_future());
        assert_eq!(
            reasons_of(&verdicts, 39),
            ["weekly within 5d", "yearly within 1y"]
        );
        // The 5d cutoff is Sunday May 5 18:00, so only ISO week 19 (from Monday May 6) is
        // inside: its newest is kept. The yearly window holds all: the newest, and the oldest.
        let kept: Vec<_> = verdicts
            .iter()
            .filter(|v| v.keep)
            .map(|v| v.index)
            .collect();
        assert_eq!(kept, vec![39, 0]);
        assert_eq!(reasons_of(&verdicts, 0), ["oldest yearly within 1y"]);
    }

    // ---- Tags ----

    #[test]
    fn keep_tag_matches_whole_lists_and_is_not_counted() {
        let tags: Vec<Vec<String>> = vec![
            vec!["a".into(), "b".into()],
            vec!["a".into()],
            vec![],
            vec!["b".into()],
            vec![],
        ];
        let times = [
            utc(2024, 1, 5, 0),
            utc(2024, 1, 4, 0),
            utc(2024, 1, 3, 0),
            utc(2024, 1, 2, 0),
            utc(2024, 1, 1, 0),
        ];
        let cands: Vec<_> = times
            .iter()
            .zip(&tags)
            .map(|(&time, tags)| Candidate { time, tags })
            .collect();
        let policy = Policy {
            tags: vec![parse_tag_list("a,b"), parse_tag_list("")],
            last: Count::Limit(2),
            ..Policy::default()
        };
        let verdicts = apply_at(&policy, &cands, far_future());
        assert_eq!(
            reasons_of(&verdicts, 0),
            ["has tags [a, b]", "last snapshot"]
        );
        assert_eq!(reasons_of(&verdicts, 1), ["last snapshot"]);
        assert_eq!(reasons_of(&verdicts, 2), ["has tags []"]);
        assert!(reasons_of(&verdicts, 3).is_empty());
        assert_eq!(reasons_of(&verdicts, 4), ["has tags []"]);

        // restic's HasTags quirks: an empty list matches all; "" matches untagged only when no
        // earlier tag of the list is missing.
        let all = vec![String::from("a")];
        assert!(has_tags(&all, &[]));
        assert!(has_tags(&[], &[]));
        assert!(has_tags(&[], &["".into(), "a".into()]));
        assert!(!has_tags(&[], &["a".into(), "".into()]));
        assert!(!has_tags(&all, &["".into()]));
    }

    // ---- Counts: -1, the oldest rule, more counts than snapshots, ties ----

    #[test]
    fn unlimited_keeps_one_per_bucket() {
        let times: Vec<_> = (0..10)
            .map(|i| utc(2024, 1, 1, 0) + Duration::hours(9 * i))
            .collect();
        let cands = untagged(&times);
        let policy = Policy {
            daily: "-1".parse().unwrap(),
            ..Policy::default()
        };
        // Jan 1 00/09/18, Jan 2 03/12/21, Jan 3 06/15, Jan 4 00/09: newest of each day,
        // and the oldest (Jan 1 00:00) as the counts never run out.
        let verdicts = apply_at(&policy, &cands, far_future());
        let kept: Vec<usize> = verdicts
            .iter()
            .filter(|v| v.keep)
            .map(|v| v.index)
            .collect();
        assert_eq!(kept, vec![9, 7, 5, 2, 0]);
        assert_eq!(reasons_of(&verdicts, 0), ["oldest daily snapshot"]);
        assert_eq!(reasons_of(&verdicts, 2), ["daily snapshot"]);
    }

    #[test]
    fn oldest_snapshot_kept_while_counts_are_left() {
        // Three snapshots on one day, keep-daily 5: the newest for the day, the oldest
        // because the rule still has counts; the middle one goes.
        let cands = untagged(&[utc(2024, 1, 1, 20), utc(2024, 1, 1, 10), utc(2024, 1, 1, 1)]);
        let policy = Policy {
            daily: Count::Limit(5),
            ..Policy::default()
        };
        let verdicts = apply_at(&policy, &cands, far_future());
        assert_eq!(reasons_of(&verdicts, 0), ["daily snapshot"]);
        assert!(reasons_of(&verdicts, 1).is_empty());
        assert_eq!(reasons_of(&verdicts, 2), ["oldest daily snapshot"]);
        // With exactly one count, it is used up by the newest: the oldest goes.
        let policy = Policy {
            daily: Count::Limit(1),
            ..Policy::default()
        };
        assert_eq!(kept_times(&policy, &cands), vec![utc(2024, 1, 1, 20)]);
        // Oldest in the same week and month as the newest: kept by both rules, marked oldest.
        let cands = untagged(&[utc(2024, 1, 2, 0), utc(2024, 1, 1, 0)]);
        let verdicts = apply_at(&policy_monthly_weekly(), &cands, far_future());
        assert_eq!(
            reasons_of(&verdicts, 1),
            ["oldest weekly snapshot", "oldest monthly snapshot"]
        );
    }

    fn policy_monthly_weekly() -> Policy {
        Policy {
            weekly: Count::Limit(3),
            monthly: Count::Limit(3),
            ..Policy::default()
        }
    }

    #[test]
    fn counts_beyond_the_snapshots_keep_everything() {
        let times: Vec<_> = (0..5)
            .map(|i| utc(2024, 1, 1, 0) + Duration::days(40 * i))
            .collect();
        let cands = untagged(&times);
        let policy = Policy {
            last: Count::Limit(100),
            hourly: Count::Limit(100),
            yearly: Count::Limit(100),
            ..Policy::default()
        };
        let verdicts = apply_at(&policy, &cands, far_future());
        assert!(verdicts.iter().all(|v| v.keep));
        assert_eq!(
            reasons_of(&verdicts, 4),
            ["last snapshot", "hourly snapshot", "yearly snapshot"]
        );
        assert_eq!(
            reasons_of(&verdicts, 0),
            ["last snapshot", "hourly snapshot", "oldest yearly snapshot"]
        );
    }

    #[test]
    fn ties_keep_input_order_and_local_days() {
        // Same instant, three offsets: sorted by index; days are each one's own local day.
        let t = utc(2024, 1, 1, 23);
        let cands = untagged(&[
            t.with_timezone(&FixedOffset::east_opt(3600).unwrap()), // Jan 2 00:00 local
            t,                                                      // Jan 1 23:00
            t.with_timezone(&FixedOffset::east_opt(7200).unwrap()), // Jan 2 01:00 local
            utc(2024, 1, 1, 12),
        ]);
        let policy = Policy {
            last: Count::Limit(1),
            ..Policy::default()
        };
        let order: Vec<usize> = apply_at(&policy, &cands, far_future())
            .iter()
            .map(|v| v.index)
            .collect();
        assert_eq!(order, vec![0, 1, 2, 3]);
        assert_eq!(kept_times(&policy, &cands), vec![cands[0].time]);

        let policy = Policy {
            daily: Count::Limit(10),
            ..Policy::default()
        };
        let verdicts = apply_at(&policy, &cands, far_future());
        // 0 (Jan 2) kept, 1 (Jan 1) kept, 2 (Jan 2 again, differs from the last kept) kept,
        // 3 (Jan 1, oldest) kept as a new bucket.
        assert!(verdicts.iter().all(|v| v.keep));
        assert_eq!(reasons_of(&verdicts, 2), ["daily snapshot"]);
        assert_eq!(reasons_of(&verdicts, 3), ["daily snapshot"]);
    }

    #[test]
    fn iso_weeks_of_the_iso_year() {
        // 2024-12-30 (Monday) is in week 1 of 2025 along with 2025-01-01.
        let cands = untagged(&[
            utc(2025, 1, 1, 0),
            utc(2024, 12, 30, 0),
            utc(2024, 12, 29, 0),
        ]);
        let policy = Policy {
            weekly: Count::Limit(2),
            ..Policy::default()
        };
        assert_eq!(
            kept_times(&policy, &cands),
            vec![utc(2025, 1, 1, 0), utc(2024, 12, 29, 0)]
        );
        assert_eq!(Bucket::Week.key(&utc(2024, 12, 30, 0), 0), 202_501);
        assert_eq!(Bucket::Hour.key(&utc(2024, 12, 30, 7), 0), 2_024_123_007);
    }

    #[test]
    fn days_from_civil_matches_chrono() {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        for year in (-1000..3000)
            .step_by(7)
            .chain([0, 1, 1600, 1900, 2000, 2100])
        {
            for month in 1..=12 {
                let date = NaiveDate::from_ymd_opt(year, month, 1).unwrap();
                assert_eq!(
                    days_from_civil(i64::from(year), i64::from(month)),
                    (date - epoch).num_days(),
                    "{date}"
                );
            }
        }
    }

    // ---- Property tests against an independent implementation ----

    type Snapshots = Vec<(DateTime<FixedOffset>, Vec<String>)>;

    const OFFSETS: [i32; 6] = [0, 3600, -5 * 3600, 19_800, 13 * 3600, -11 * 3600];
    const TAGS: [&str; 3] = ["a", "b", "c"];

    /// Written from restic's documentation and source, separately: string bucket keys from
    /// chrono's formatter, one pass per rule, Go's AddDate via chrono date arithmetic.
    fn reference(
        policy: &Policy,
        cands: &[Candidate<'_>],
        now: DateTime<Utc>,
    ) -> Vec<(usize, bool, Vec<String>)> {
        let mut order: Vec<usize> = (0..cands.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(cands[i].time), i));
        let n = order.len();
        let time = |pos: usize| cands[order[pos]].time;
        let show = |s: &Span| {
            let mut out = String::new();
            if s.years != 0 {
                out += &format!("{}y", s.years);
            }
            if s.months != 0 {
                out += &format!("{}m", s.months);
            }
            if s.days != 0 {
                out += &format!("{}d", s.days);
            }
            if s.hours != 0 {
                out += &format!("{}h", s.hours);
            }
            out
        };
        // Newest snapshot strictly before now (first in sorted order wins a tie), else Go's
        // zero time.
        let latest = order
            .iter()
            .map(|&i| cands[i].time)
            .find(|t| *t < now)
            .filter(|t| *t > Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap())
            .unwrap_or_else(|| {
                Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0)
                    .unwrap()
                    .fixed_offset()
            });
        let go_cutoff = |s: &Span| {
            let local = latest.naive_local();
            let months = local.year() * 12 + local.month0() as i32 - s.years * 12 - s.months;
            let first =
                NaiveDate::from_ymd_opt(months.div_euclid(12), months.rem_euclid(12) as u32 + 1, 1)
                    .unwrap();
            let date = first + Duration::days(i64::from(local.day()) - 1 - i64::from(s.days));
            let wall = date.and_time(local.time()) - Duration::hours(i64::from(s.hours));
            latest.offset().from_local_datetime(&wall).unwrap()
        };

        let mut per_rule: Vec<Vec<Option<String>>> = Vec::new();
        // Tags.
        for list in &policy.tags {
            per_rule.push(
                (0..n)
                    .map(|pos| {
                        let have = cands[order[pos]].tags;
                        let untagged_hit =
                            list.iter().position(|t| t.is_empty() && have.is_empty());
                        let missing = list.iter().position(|t| !have.contains(t));
                        let hit = match (untagged_hit, missing) {
                            (Some(u), Some(m)) => u <= m,
                            (_, None) => true,
                            (None, Some(_)) => false,
                        };
                        hit.then(|| format!("has tags [{}]", list.join(", ")))
                    })
                    .collect(),
            );
        }
        // Within.
        if let Some(s) = policy.within.filter(|s| !s.is_zero()) {
            let cut = go_cutoff(&s);
            per_rule.push(
                (0..n)
                    .map(|pos| (time(pos) > cut).then(|| format!("within {}", show(&s))))
                    .collect(),
            );
        }
        type KeyFn = fn(&DateTime<FixedOffset>) -> String;
        let keys: [(&str, KeyFn); 5] = [
            ("hourly", |t| t.format("%Y-%m-%d %H").to_string()),
            ("daily", |t| t.format("%Y-%m-%d").to_string()),
            ("weekly", |t| t.format("%G-W%V").to_string()),
            ("monthly", |t| t.format("%Y-%m").to_string()),
            ("yearly", |t| t.format("%Y").to_string()),
        ];
        // Counted rules.
        let counted = [
            policy.last,
            policy.hourly,
            policy.daily,
            policy.weekly,
            policy.monthly,
            policy.yearly,
        ];
        for (rule, count) in counted.iter().enumerate() {
            let mut out = vec![None; n];
            let mut budget: Option<u64> = match count {
                Count::Off | Count::Limit(0) => {
                    per_rule.push(out);
                    continue;
                }
                Count::Limit(k) => Some(u64::from(*k)),
                Count::Unlimited => None,
            };
            let name = if rule == 0 { "last" } else { keys[rule - 1].0 };
            let mut previous: Option<String> = None;
            for (pos, slot) in out.iter_mut().enumerate() {
                if budget == Some(0) {
                    break;
                }
                let key = if rule == 0 {
                    format!("#{pos}")
                } else {
                    (keys[rule - 1].1)(&time(pos))
                };
                let fresh = previous.as_deref() != Some(key.as_str());
                if fresh || pos == n - 1 {
                    let oldest = if fresh { "" } else { "oldest " };
                    *slot = Some(format!("{oldest}{name} snapshot"));
                    previous = Some(key);
                    budget = budget.map(|b| b - 1);
                }
            }
            per_rule.push(out);
        }
        // Windowed rules.
        let windowed = [
            policy.within_hourly,
            policy.within_daily,
            policy.within_weekly,
            policy.within_monthly,
            policy.within_yearly,
        ];
        for (rule, s) in windowed.iter().enumerate() {
            let Some(s) = s.filter(|s| !s.is_zero()) else {
                continue;
            };
            let cut = go_cutoff(&s);
            let (name, key_of) = keys[rule];
            let mut previous: Option<String> = None;
            let mut out = vec![None; n];
            for (pos, slot) in out.iter_mut().enumerate() {
                if time(pos) <= cut {
                    continue;
                }
                let key = key_of(&time(pos));
                let fresh = previous.as_deref() != Some(key.as_str());
                if fresh || pos == n - 1 {
                    let oldest = if fresh { "" } else { "oldest " };
                    *slot = Some(format!("{oldest}{name} within {}", show(&s)));
                    previous = Some(key);
                }
            }
            per_rule.push(out);
        }

        (0..n)
            .map(|pos| {
                let reasons: Vec<String> = per_rule
                    .iter()
                    .filter_map(|rule| rule[pos].clone())
                    .collect();
                (order[pos], !reasons.is_empty(), reasons)
            })
            .collect()
    }

    fn count_strategy() -> impl Strategy<Value = Count> {
        prop_oneof![
            2 => Just(Count::Off),
            4 => (0u32..6).prop_map(Count::Limit),
            1 => Just(Count::Unlimited),
        ]
    }

    /// Mostly small spans on the six-hour grid, so that snapshots fall exactly on cutoffs;
    /// sometimes larger ones.
    fn span_strategy() -> impl Strategy<Value = Option<Span>> {
        let small = (
            0i32..3,
            0i32..12,
            prop::sample::select(vec![0, 6, 12, 18, 30, 48, 5]),
        )
            .prop_map(|(months, days, hours)| Span {
                years: 0,
                months,
                days,
                hours,
            });
        let large =
            (0i32..2, 0i32..15, 0i32..40, 0i32..60).prop_map(|(years, months, days, hours)| Span {
                years,
                months,
                days,
                hours,
            });
        prop::option::weighted(0.3, prop_oneof![3 => small, 1 => large])
    }

    fn tag_list_strategy() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", ""]), 0..3)
            .prop_map(|l| l.into_iter().map(String::from).collect())
    }

    fn policy_strategy() -> impl Strategy<Value = Policy> {
        (
            prop::array::uniform6(count_strategy()),
            prop::array::uniform6(span_strategy()),
            prop::collection::vec(tag_list_strategy(), 0..3),
        )
            .prop_map(|(c, s, tags)| Policy {
                last: c[0],
                hourly: c[1],
                daily: c[2],
                weekly: c[3],
                monthly: c[4],
                yearly: c[5],
                within: s[0],
                within_hourly: s[1],
                within_daily: s[2],
                within_weekly: s[3],
                within_monthly: s[4],
                within_yearly: s[5],
                tags,
            })
    }

    /// Snapshots (time, tags) and `now`. Times on a six-hour grid over two months (ties,
    /// shared buckets, times exactly on cutoffs) or on minutes over three years, from a base
    /// chosen so that dense data ends on a month end or past a year end, in one of a few offsets; `now` far ahead or on
    /// the grid (sometimes exactly at a snapshot).
    fn input_strategy() -> impl Strategy<Value = (Snapshots, DateTime<Utc>)> {
        // Dense data ends about 60 days after the base: on Mar 31 2023, Mar 31 2024 (leap),
        // May 31 and Sep 28, or Feb 18 across a year end.
        let bases = vec![
            Utc.with_ymd_and_hms(2022, 12, 20, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2023, 1, 30, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2024, 1, 31, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2023, 4, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2023, 7, 30, 0, 0, 0).unwrap(),
        ];
        let dense = prop::collection::vec((0i64..240).prop_map(|k| k * 6 * 3600), 0..40);
        let sparse = prop::collection::vec((0i64..3 * 366 * 24 * 60).prop_map(|m| m * 60), 0..40);
        let mixed = prop::collection::vec(
            prop_oneof![
                (0i64..240).prop_map(|k| k * 6 * 3600),
                (0i64..3 * 366 * 24 * 60).prop_map(|m| m * 60)
            ],
            0..40,
        );
        let offsets = prop::collection::vec(prop::sample::select(OFFSETS.to_vec()), 40);
        let tags = prop::collection::vec(prop::sample::subsequence(TAGS.to_vec(), 0..=3), 40);
        let now = prop_oneof![2 => Just(None), 1 => (0i64..250).prop_map(Some)];
        (
            prop::sample::select(bases),
            prop_oneof![dense, sparse, mixed],
            offsets,
            tags,
            now,
        )
            .prop_map(|(base, secs, offsets, tags, now)| {
                let snaps = secs
                    .iter()
                    .zip(offsets.iter().zip(tags))
                    .map(|(&secs, (&off, tags))| {
                        let time = (base + Duration::seconds(secs))
                            .with_timezone(&FixedOffset::east_opt(off).unwrap());
                        (time, tags.into_iter().map(String::from).collect())
                    })
                    .collect();
                let now = now.map_or_else(far_future, |k| base + Duration::hours(6 * k));
                (snaps, now)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_reference(
            (snaps, now) in input_strategy(),
            policy in policy_strategy(),
        ) {
            let cands: Vec<Candidate<'_>> =
                snaps.iter().map(|(time, tags)| Candidate { time: *time, tags }).collect();
            let got: Vec<(usize, bool, Vec<String>)> = apply_at(&policy, &cands, now)
                .into_iter()
                .map(|v| (v.index, v.keep, v.reasons))
                .collect();
            prop_assert_eq!(got, reference(&policy, &cands, now));
        }

        #[test]
        fn span_display_round_trips(years in 0i32..1000, months in 0i32..1000, days in 0i32..1000, hours in 0i32..100_000) {
            let s = Span { years, months, days, hours };
            prop_assert_eq!(s.to_string().parse::<Span>(), Ok(s));
        }

        #[test]
        fn span_parse_never_panics(s in "\\PC{0,12}|[-0-9ymdhx ]{0,12}") {
            let _ = s.parse::<Span>();
            let _ = s.parse::<Count>();
        }

        /// Extreme times, offsets and spans (negative ones too, which only code can build):
        /// no panic, one verdict per candidate.
        #[test]
        fn never_panics(
            raw in prop::collection::vec((any::<i64>(), -86_399i32..=86_399, prop::option::of(prop::collection::vec(".{0,2}", 0..3))), 0..8),
            fields in prop::array::uniform4(any::<i32>()),
            counts in prop::array::uniform6(count_strategy()),
            now_secs in any::<i64>(),
        ) {
            let min = DateTime::<Utc>::MIN_UTC.timestamp();
            let max = DateTime::<Utc>::MAX_UTC.timestamp();
            let snaps: Snapshots = raw
                .into_iter()
                .map(|(secs, off, tags)| {
                    let secs = min + secs.rem_euclid(max - min + 1);
                    let time = DateTime::from_timestamp(secs, 0).unwrap()
                        .with_timezone(&FixedOffset::east_opt(off).unwrap());
                    (time, tags.unwrap_or_default())
                })
                .collect();
            let cands: Vec<Candidate<'_>> =
                snaps.iter().map(|(time, tags)| Candidate { time: *time, tags }).collect();
            let s = Span { years: fields[0], months: fields[1], days: fields[2], hours: fields[3] };
            let policy = Policy {
                last: counts[0], hourly: counts[1], daily: counts[2],
                weekly: counts[3], monthly: counts[4], yearly: counts[5],
                within: Some(s), within_hourly: Some(s), within_daily: Some(s),
                within_weekly: Some(s), within_monthly: Some(s), within_yearly: Some(s),
                tags: vec![vec!["".into()]],
            };
            let now = DateTime::from_timestamp(min + now_secs.rem_euclid(max - min + 1), 0).unwrap();
            let verdicts = apply_at(&policy, &cands, now);
            prop_assert_eq!(verdicts.len(), cands.len());
            let _ = policy.to_string();
        }
    }
}
