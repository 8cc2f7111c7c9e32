//! `sbk schedule print`: the jobs' schedules ([`super::cron`]) written out as crontab lines or
//! systemd timers, with the environment file that hands the jobs their secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::config::Config;
use super::cron::Schedule;

/// A crontab line running `command` on `schedule`; `None` when cron cannot express it
/// (seconds, or croner's `L`, `W`, `#` and `+`). A `%` in `command` is escaped: cron would
/// read it as the end of the command.
pub fn crontab_line(schedule: &Schedule, command: &str) -> Option<String> {
    let p = &schedule.cron.pattern;
    let portable = !schedule.has_seconds()
        && !p.matches_dom_and_dow()
        && ![&p.minutes, &p.hours, &p.days, &p.months, &p.days_of_week]
            .iter()
            .any(|c| c.has_modifiers());
    portable.then(|| format!("{} {}", schedule.expr, command.replace('%', "\\%")))
}

const DOW_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// systemd `OnCalendar=` values equivalent to `schedule` (several when cron's day-of-month OR
/// day-of-week rule needs two), or why there are none (`L`, `W`, `#` have no equivalent).
pub fn on_calendar(schedule: &Schedule) -> Result<Vec<String>, String> {
    let p = &schedule.cron.pattern;
    let fields = [&p.minutes, &p.hours, &p.days, &p.months, &p.days_of_week];
    if fields.iter().any(|c| c.has_modifiers()) || p.seconds.has_modifiers() {
        return Err(format!(
            "{:?} uses L, W or #, which systemd calendar events cannot express",
            schedule.expr
        ));
    }
    let list = |values: Vec<u16>, full: usize, width: usize| -> String {
        if values.len() == full {
            "*".to_owned()
        } else {
            values
                .iter()
                .map(|v| format!("{v:0width$}"))
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let seconds = if schedule.has_seconds() {
        list(p.seconds.values(), 60, 2)
    } else {
        "00".to_owned()
    };
    let time = format!(
        "{}:{}:{seconds}",
        list(p.hours.values(), 24, 2),
        list(p.minutes.values(), 60, 2)
    );
    let months = list(p.months.values(), 12, 2);
    let days = list(p.days.values(), 31, 2);
    let mut dows: Vec<u16> = p.days_of_week.values().iter().map(|d| d % 7).collect();
    dows.sort_unstable();
    dows.dedup();
    let dow = if dows.len() == 7 {
        String::new()
    } else {
        let names: Vec<&str> = dows.iter().map(|d| DOW_NAMES[*d as usize]).collect();
        format!("{} ", names.join(","))
    };
    // Which day rules apply is croner's call (`*/1` is a restriction that matches every day).
    if p.matches_dom_and_dow() {
        // `+`: both day rules must match, as in one systemd event.
        return Ok(vec![format!("{dow}*-{months}-{days} {time}")]);
    }
    Ok(match (p.is_dom_wildcard(), p.is_dow_wildcard()) {
        (true, true) => vec![format!("*-{months}-* {time}")],
        (false, true) => vec![format!("*-{months}-{days} {time}")],
        (true, false) => vec![format!("{dow}*-{months}-* {time}")],
        // cron: either day rule matches; systemd: several OnCalendar= lines are OR'ed.
        (false, false) => vec![
            format!("*-{months}-{days} {time}"),
            format!("{dow}*-{months}-* {time}"),
        ],
    })
}

/// What the jobs read from outside the configuration file, for the units and crontab lines
/// `sbk schedule print` writes: cron and systemd start jobs with an almost empty environment,
/// so a secret taken from a variable must be handed over in an environment file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobEnvironment {
    /// Variables secrets are read from, each with its uses ("password of repository main").
    pub required: BTreeMap<String, Vec<String>>,
    /// Variables read when set (a source without `password` falls back to `PGPASSWORD`), each
    /// with why.
    pub optional: BTreeMap<String, Vec<String>>,
    /// Files secrets are read from, with their uses.
    pub files: BTreeMap<PathBuf, Vec<String>>,
    /// Uses of secrets read from a command.
    pub commands: Vec<String>,
}

impl JobEnvironment {
    /// Collects what the configured jobs read (see [`super::probe::job_secrets`]).
    pub fn of(config: &Config) -> Self {
        let mut env = JobEnvironment::default();
        for s in super::probe::job_secrets(config) {
            match (&s.source.env, &s.source.file, &s.source.command) {
                (Some(v), _, _) => env.required.entry(v.clone()).or_default().push(s.what),
                (_, Some(p), _) => env.files.entry(p.clone()).or_default().push(s.what),
                (_, _, Some(_)) => env.commands.push(s.what),
                _ => {}
            }
        }
        let mut optional = |var: &str, why: String| {
            let list = env.optional.entry(var.to_owned()).or_default();
            if !list.contains(&why) {
                list.push(why);
            }
        };
        for j in config.jobs.values() {
            if let Some(r) = config.repositories.get(&j.repository) {
                if r.url.starts_with("s3:") && r.access_key_id.is_none() {
                    let why = format!("repository {} has no access_key_id", r.name);
                    for v in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"] {
                        optional(v, why.clone());
                    }
                }
            }
            let Some(s) = j.source.as_ref().and_then(|s| config.sources.get(s)) else {
                continue;
            };
            if s.password.is_none() {
                optional(
                    "PGPASSWORD",
                    format!(
                        "source {} has no `password` (or a ~/.pgpass of the user the jobs run as)",
                        s.name
                    ),
                );
            }
            if let Some(sb) = &s.supabase {
                if !sb.no_storage && sb.storage_access_key_id.is_none() {
                    let why = format!("source {} has no storage_access_key_id", s.name);
                    optional(crate::supabase::storage::ACCESS_KEY_VAR, why.clone());
                    optional(crate::supabase::storage::SECRET_KEY_VAR, why);
                }
                if !sb.no_functions
                    && sb.project.functions_dir.is_none()
                    && sb.access_token.is_none()
                {
                    optional(
                        crate::supabase::api::TOKEN_VAR,
                        format!("source {} has no access_token", s.name),
                    );
                }
            }
        }
        env
    }

    /// Whether a job cannot run without the environment file.
    pub fn needs_file(&self) -> bool {
        !self.required.is_empty()
    }

    /// Comment lines (each starting with `#`) saying what `env_file` must and may define, and
    /// which secret files and commands the jobs' user must be able to use, and how to check
    /// it all with `config` (the configuration file). Names only: no value is ever printed.
    pub fn comment(&self, env_file: &Path, check: &str) -> String {
        let mut t = format!(
            "# Environment file {}: create it owned by the user the jobs run as, mode 0600, one\n\
             # NAME=value line per variable (single-quote a value with spaces or shell characters;\n\
             # no `export`, no $-expansion). sbk never prints the values.\n",
            env_file.display()
        );
        let list = |t: &mut String, map: &BTreeMap<String, Vec<String>>| {
            for (name, uses) in map {
                t.push_str(&format!("#   {name}  ({})\n", uses.join("; ")));
            }
        };
        if self.required.is_empty() {
            t.push_str("# No secret is read from the environment: the file is optional.\n");
        } else {
            t.push_str("# It must define:\n");
            list(&mut t, &self.required);
        }
        if !self.optional.is_empty() {
            t.push_str("# It may define (read when set):\n");
            list(&mut t, &self.optional);
        }
        if !self.files.is_empty() {
            t.push_str("# Secret files, which the user the jobs run as must be able to read:\n");
            for (path, uses) in &self.files {
                t.push_str(&format!("#   {}  ({})\n", path.display(), uses.join("; ")));
            }
        }
        if !self.commands.is_empty() {
            t.push_str(&format!(
                "# Secret commands, run as that user with this environment: {}\n",
                self.commands.join("; ")
            ));
        }
        t.push_str(&format!("# Check it all as that user: {check}\n"));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::automation::cron::*;
    use chrono::TimeZone;
    use chrono::{DateTime, Local};

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Local> {
        Local.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn parses_fields_names_and_seconds() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        assert_eq!(
            s.next_after(at(2026, 3, 10, 1, 0)),
            Some(at(2026, 3, 10, 2, 0))
        );
        assert_eq!(
            s.next_after(at(2026, 3, 10, 2, 0)),
            Some(at(2026, 3, 11, 2, 0))
        );
        let w = Schedule::parse("@weekly").unwrap();
        // 2026-03-15 is a Sunday.
        assert_eq!(
            w.next_after(at(2026, 3, 10, 1, 0)),
            Some(at(2026, 3, 15, 0, 0))
        );
        assert!(Schedule::parse("*/5 * * * * *").unwrap().has_seconds());
        assert!(Schedule::parse("0 2 * *").is_err());
        assert!(Schedule::parse("0 25 * * *").is_err());
        assert!(Schedule::parse("0 0 30 2 *").is_err());
        assert!(Schedule::parse("@fortnightly").is_err());
    }

    #[test]
    fn due_and_missed_runs() {
        let daily = vec![Schedule::parse("0 2 * * *").unwrap()];
        let now = at(2026, 3, 10, 9, 0);
        assert!(is_due(&daily, None, now));
        assert!(!is_due(&daily, Some(at(2026, 3, 10, 2, 5)), now));
        assert!(is_due(&daily, Some(at(2026, 3, 9, 2, 5)), now));
        let day = chrono::Duration::hours(24);
        assert_eq!(
            missed_run(&daily, Some(at(2026, 3, 9, 2, 0)), now, day),
            Some(at(2026, 3, 10, 2, 0))
        );
        assert_eq!(
            missed_run(&daily, Some(at(2026, 3, 10, 2, 0)), now, day),
            None
        );
        // Too old to catch up: skipped.
        assert_eq!(
            missed_run(
                &daily,
                Some(at(2026, 3, 1, 2, 0)),
                now,
                chrono::Duration::hours(6)
            ),
            None
        );
        assert_eq!(missed_run(&daily, None, now, day), None);
    }

    #[test]
    fn systemd_calendar_events() {
        let cal = |e: &str| on_calendar(&Schedule::parse(e).unwrap()).unwrap();
        assert_eq!(cal("0 2 * * *"), vec!["*-*-* 02:00:00"]);
        assert_eq!(cal("0 */6 * * *"), vec!["*-*-* 00,06,12,18:00:00"]);
        assert_eq!(cal("30 3 * * 0"), vec!["Sun *-*-* 03:30:00"]);
        assert_eq!(cal("0 4 1 * *"), vec!["*-*-01 04:00:00"]);
        assert_eq!(cal("@weekly"), vec!["Sun *-*-* 00:00:00"]);
        assert_eq!(
            cal("0 4 1 * 1-5"),
            vec!["*-*-01 04:00:00", "Mon,Tue,Wed,Thu,Fri *-*-* 04:00:00"]
        );
        assert_eq!(cal("*/20 * * * * *"), vec!["*-*-* *:*:00,20,40"]);
        assert!(on_calendar(&Schedule::parse("0 0 L * *").unwrap()).is_err());
        // A day-of-month step matching every day still ORs with the weekday, as cron does.
        assert_eq!(
            cal("0 0 */1 * 1"),
            vec!["*-*-* 00:00:00", "Mon *-*-* 00:00:00"]
        );
        assert!(crontab_line(&Schedule::parse("0 0 L * *").unwrap(), "x").is_none());
        assert!(crontab_line(&Schedule::parse("*/5 * * * * *").unwrap(), "x").is_none());
        assert_eq!(
            crontab_line(&Schedule::parse("0 2 * * *").unwrap(), "sbk run a").unwrap(),
            "0 2 * * * sbk run a"
        );
    }
}
