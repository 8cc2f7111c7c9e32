//! When jobs run: cron expressions (five fields, or six with seconds first, and the `@daily`
//! names) evaluated in local time by `croner`, and the rule for runs missed while nothing was
//! running.

use chrono::{DateTime, Local};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// One parsed cron expression.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub(super) expr: String,
    pub(super) cron: Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Schedule {
    /// Parses `min hour dom month dow`, `sec min hour dom month dow`, or a name (`@hourly`,
    /// `@daily`/`@midnight`, `@weekly`, `@monthly`, `@yearly`/`@annually`). As in cron, a day
    /// restricted both by day of month and day of week matches either.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let expr = expr.trim();
        let canonical = if expr.eq_ignore_ascii_case("@midnight") {
            "@daily"
        } else {
            expr
        };
        let fields = canonical.split_whitespace().count();
        if !canonical.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "{expr:?} has {fields} fields: give 5 (minute hour day-of-month month \
                 day-of-week), 6 (seconds first), or @hourly/@daily/@weekly/@monthly/@yearly"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(canonical)
            .map_err(|e| format!("{expr:?} is not a valid cron expression: {e}"))?;
        // An expression that never fires (February 30th) is a mistake, not a schedule.
        if cron.find_next_occurrence(&Local::now(), false).is_err() {
            return Err(format!("{expr:?} never matches a date"));
        }
        Ok(Schedule {
            expr: expr.to_owned(),
            cron,
        })
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// Whether the expression has a seconds field (cron and systemd-from-cron cannot express it).
    pub fn has_seconds(&self) -> bool {
        !self.expr.starts_with('@') && self.expr.split_whitespace().count() == 6
    }

    /// The first time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Local>) -> Option<DateTime<Local>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// The last time at or before `t`.
    pub fn prev_at_or_before(&self, t: DateTime<Local>) -> Option<DateTime<Local>> {
        self.cron.find_previous_occurrence(&t, true).ok()
    }
}

/// The first time strictly after `t` of any of `schedules`.
pub fn next_of(schedules: &[Schedule], t: DateTime<Local>) -> Option<DateTime<Local>> {
    schedules.iter().filter_map(|s| s.next_after(t)).min()
}

/// The last time at or before `t` of any of `schedules`.
pub fn prev_of(schedules: &[Schedule], t: DateTime<Local>) -> Option<DateTime<Local>> {
    schedules
        .iter()
        .filter_map(|s| s.prev_at_or_before(t))
        .max()
}

/// Whether a step with its own schedule (a job's `prune`, `check`, `drill`) is due: one of its
/// scheduled times has passed since the step last ran. A step that never ran is due at once, so
/// a new job checks its repository on its first run.
pub fn is_due(
    schedules: &[Schedule],
    last_run: Option<DateTime<Local>>,
    now: DateTime<Local>,
) -> bool {
    match (last_run, prev_of(schedules, now)) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(last), Some(prev)) => prev > last,
    }
}

/// The missed-run rule of `sbk daemon`, as anacron and systemd's `Persistent=true` do it: when
/// the daemon starts (or wakes after the machine slept) and a job's latest scheduled time lies
/// after the job's latest recorded start, the job runs once at once, however many runs were
/// missed, provided that scheduled time is no older than `catch_up` (older ones are skipped:
/// a snapshot taken days late is rarely what was wanted, and the next scheduled run comes soon).
/// Returns the missed scheduled time.
pub fn missed_run(
    schedules: &[Schedule],
    last_start: Option<DateTime<Local>>,
    now: DateTime<Local>,
    catch_up: chrono::Duration,
) -> Option<DateTime<Local>> {
    let prev = prev_of(schedules, now)?;
    let missed = match last_start {
        Some(last) => prev > last,
        None => false, // a job never run waits for its first scheduled time
    };
    (missed && now - prev <= catch_up).then_some(prev)
}
