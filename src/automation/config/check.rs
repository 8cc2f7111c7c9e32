//! Checking the raw file into the validated [`Config`]: every problem collected with its
//! position, in one pass, so `config check` reports them all at once.

use super::*;

/// Line and column (1-based) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(offset, |nl| offset - nl - 1)
        .saturating_add(1);
    (line, column)
}

pub(super) struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(super) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.problems.push(Problem {
            line,
            column,
            message: message.into(),
        });
    }

    pub(super) fn secret(&mut self, field: &str, v: &Spanned<SecretField>) -> Option<SecretSource> {
        match v.get_ref() {
            SecretField::Inline => {
                self.at(
                    v.span(),
                    format!(
                        "`{field}` is a secret and may not be written in the file: use \
                         {field} = {{ env = \"VARIABLE\" }}, {{ file = \"/path/to/file\" }} \
                         or {{ command = \"...\" }}"
                    ),
                );
                None
            }
            SecretField::Source(s) if s.fields_set() != 1 => {
                self.at(
                    v.span(),
                    format!("`{field}`: give exactly one of env, file or command"),
                );
                None
            }
            SecretField::Source(s) => Some(s.clone()),
        }
    }

    pub(super) fn duration(
        &mut self,
        field: &str,
        v: &Option<Spanned<String>>,
    ) -> Option<Duration> {
        let v = v.as_ref()?;
        match humantime::parse_duration(v.get_ref()) {
            // Ten years bounds every wait and deadline sbk computes from these.
            Ok(d) if d > Duration::from_secs(10 * 366 * 86400) => {
                self.at(
                    v.span(),
                    format!("`{field}`: {:?} is longer than ten years", v.get_ref()),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.at(
                    v.span(),
                    format!(
                        "`{field}`: {:?} is not a duration ({e}); write e.g. \"90s\", \"10m\", \"1h\", \"2d\"",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    pub(super) fn schedules(
        &mut self,
        field: &str,
        span: Range<usize>,
        exprs: &[String],
    ) -> Vec<Schedule> {
        if exprs.is_empty() {
            self.at(span.clone(), format!("`{field}` is empty"));
        }
        let mut out = Vec::new();
        for e in exprs {
            match Schedule::parse(e) {
                Ok(s) => out.push(s),
                Err(msg) => self.at(span.clone(), format!("`{field}`: {msg}")),
            }
        }
        out
    }

    pub(super) fn step_when(&mut self, field: &str, v: &Option<Spanned<StepWhenRaw>>) -> StepWhen {
        match v.as_ref().map(|v| (v.span(), v.get_ref())) {
            None | Some((_, StepWhenRaw::Always(false))) => StepWhen::Never,
            Some((_, StepWhenRaw::Always(true))) => StepWhen::Always,
            Some((span, StepWhenRaw::Cron(e))) => {
                StepWhen::Due(self.schedules(field, span, std::slice::from_ref(e)))
            }
        }
    }

    pub(super) fn count(&mut self, field: &str, v: &Option<Spanned<i64>>) -> Count {
        let Some(v) = v else { return Count::Off };
        match v.get_ref().to_string().parse::<Count>() {
            Ok(c) => c,
            Err(e) => {
                self.at(v.span(), format!("`{field}`: {e}"));
                Count::Off
            }
        }
    }

    pub(super) fn span(&mut self, field: &str, v: &Option<Spanned<String>>) -> Option<Span> {
        let v = v.as_ref()?;
        match v.get_ref().parse::<Span>() {
            Ok(s) => Some(s),
            Err(e) => {
                self.at(
                    v.span(),
                    format!("`{field}`: {e} (write e.g. \"1y5m7d2h\")"),
                );
                None
            }
        }
    }

    pub(super) fn retention(&mut self, r: &Spanned<RawRetention>) -> Policy {
        let raw = r.get_ref();
        let before = self.problems.len();
        let policy = Policy {
            last: self.count("keep_last", &raw.keep_last),
            hourly: self.count("keep_hourly", &raw.keep_hourly),
            daily: self.count("keep_daily", &raw.keep_daily),
            weekly: self.count("keep_weekly", &raw.keep_weekly),
            monthly: self.count("keep_monthly", &raw.keep_monthly),
            yearly: self.count("keep_yearly", &raw.keep_yearly),
            within: self.span("keep_within", &raw.keep_within),
            within_hourly: self.span("keep_within_hourly", &raw.keep_within_hourly),
            within_daily: self.span("keep_within_daily", &raw.keep_within_daily),
            within_weekly: self.span("keep_within_weekly", &raw.keep_within_weekly),
            within_monthly: self.span("keep_within_monthly", &raw.keep_within_monthly),
            within_yearly: self.span("keep_within_yearly", &raw.keep_within_yearly),
            tags: raw
                .keep_tags
                .iter()
                .map(|t| crate::retention::parse_tag_list(t))
                .collect(),
        };
        if policy.is_empty() && self.problems.len() == before {
            self.at(
                r.span(),
                "`retention` keeps nothing: set keep_last, keep_daily, ... (an empty policy \
                 would remove every snapshot)",
            );
        }
        policy
    }
}

/// A connection string must not carry a password (`postgresql://u:pw@h`, `password=...`).
pub(super) fn has_inline_password(url: &str) -> Result<bool, String> {
    let none = |_: &str| None;
    ConnParams::resolve(Some(url), &none)
        .map(|c| c.password().is_some())
        .map_err(|e| {
            // The parser quotes what it could not read, which may be part of a password.
            if url.contains("password") || url.contains('@') {
                "not a valid connection URL or conninfo string (see docs/postgres.md)".to_owned()
            } else {
                e.to_string()
            }
        })
}

impl Config {
    /// Validates `text` (read from `path`, for messages).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            path: path.to_owned(),
            problems,
        };
        // Structure first. serde stops at the first problem; to report every one at once,
        // the lines of each problem are blanked and the text read again, as long as that
        // cannot change what the remaining lines mean (never a table header).
        let mut cleaned = text.to_owned();
        let mut structural = Vec::new();
        let raw: Option<RawFile> = loop {
            let e = match toml::from_str::<RawFile>(&cleaned) {
                Ok(r) => break Some(r),
                Err(e) => e,
            };
            let span = e.span();
            let (line, column) = span.as_ref().map_or((0, 0), |s| line_col(text, s.start));
            structural.push(Problem {
                line,
                column,
                message: e.message().trim().to_owned(),
            });
            let Some(span) = span else { break None };
            let (first, _) = line_col(&cleaned, span.start);
            let (last, _) = line_col(&cleaned, span.end.saturating_sub(1).max(span.start));
            let lines: Vec<&str> = cleaned.split('\n').collect();
            let hit = &lines[first - 1..last.min(lines.len())];
            if structural.len() >= 50 || hit.iter().any(|l| l.trim_start().starts_with('[')) {
                break None;
            }
            // Blank, keeping every offset (and so every line and column) in place.
            let blanked: Vec<String> = lines
                .iter()
                .enumerate()
                .map(|(i, l)| match (first - 1..last).contains(&i) {
                    true => " ".repeat(l.len()),
                    false => (*l).to_owned(),
                })
                .collect();
            cleaned = blanked.join("\n");
        };
        let Some(raw) = raw else {
            return Err(fail(structural));
        };
        let mut c = Checker {
            text,
            problems: structural,
        };
        let daemon = c.daemon(&raw);
        let repositories = c.repositories(&raw);
        let sources = c.sources(&raw);
        let alerts = c.alerts(&raw);
        let jobs = c.jobs(&raw);
        if c.problems.is_empty() {
            Ok(Config {
                path: path.to_owned(),
                state_dir: raw.state_dir.unwrap_or_else(default_state_dir),
                log_dir: raw.log_dir,
                metrics_file: raw.metrics_file,
                metrics_file_readable: raw.metrics_file_readable.unwrap_or(false),
                daemon,
                repositories,
                sources,
                alerts,
                jobs,
            })
        } else {
            c.problems.sort_by_key(|p| (p.line, p.column));
            Err(fail(c.problems))
        }
    }
}

/// A job is overdue when its newest good snapshot is older than twice the longest gap between
/// two of its scheduled runs: one run may fail (and retry) without an alarm, two may not.
pub(super) fn default_max_age(schedules: &[Schedule]) -> Duration {
    let mut t = chrono::Local::now();
    let mut longest = chrono::Duration::zero();
    // The longest gap over the next 64 runs covers monthly and weekday patterns.
    let Some(mut prev) = crate::automation::cron::next_of(schedules, t) else {
        return Duration::from_secs(26 * 3600);
    };
    for _ in 0..64 {
        t = prev;
        let Some(next) = crate::automation::cron::next_of(schedules, t) else {
            break;
        };
        longest = longest.max(next - prev);
        prev = next;
    }
    (longest * 2)
        .to_std()
        .unwrap_or(Duration::from_secs(26 * 3600))
}
