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

struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.problems.push(Problem {
            line,
            column,
            message: message.into(),
        });
    }

    fn secret(&mut self, field: &str, v: &Spanned<SecretField>) -> Option<SecretSource> {
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

    fn duration(&mut self, field: &str, v: &Option<Spanned<String>>) -> Option<Duration> {
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

    fn schedules(&mut self, field: &str, span: Range<usize>, exprs: &[String]) -> Vec<Schedule> {
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

    fn step_when(&mut self, field: &str, v: &Option<Spanned<StepWhenRaw>>) -> StepWhen {
        match v.as_ref().map(|v| (v.span(), v.get_ref())) {
            None | Some((_, StepWhenRaw::Always(false))) => StepWhen::Never,
            Some((_, StepWhenRaw::Always(true))) => StepWhen::Always,
            Some((span, StepWhenRaw::Cron(e))) => {
                StepWhen::Due(self.schedules(field, span, std::slice::from_ref(e)))
            }
        }
    }

    fn count(&mut self, field: &str, v: &Option<Spanned<i64>>) -> Count {
        let Some(v) = v else { return Count::Off };
        match v.get_ref().to_string().parse::<Count>() {
            Ok(c) => c,
            Err(e) => {
                self.at(v.span(), format!("`{field}`: {e}"));
                Count::Off
            }
        }
    }

    fn span(&mut self, field: &str, v: &Option<Spanned<String>>) -> Option<Span> {
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

    fn retention(&mut self, r: &Spanned<RawRetention>) -> Policy {
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
fn has_inline_password(url: &str) -> Result<bool, String> {
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
        let daemon = DaemonConfig {
            listen: match &raw.daemon.listen {
                None => DEFAULT_LISTEN.parse().expect("valid default"),
                Some(l) => match l.get_ref().parse::<SocketAddr>() {
                    Ok(a) => a,
                    Err(_) => {
                        c.at(
                            l.span(),
                            format!(
                                "`listen`: {:?} is not an address and port such as \"127.0.0.1:9187\"",
                                l.get_ref()
                            ),
                        );
                        DEFAULT_LISTEN.parse().expect("valid default")
                    }
                },
            },
            token: raw.daemon.token.as_ref().and_then(|t| c.secret("token", t)),
            stop_timeout: c
                .duration("stop_timeout", &raw.daemon.stop_timeout)
                .unwrap_or(Duration::from_secs(60)),
            catch_up: c
                .duration("catch_up", &raw.daemon.catch_up)
                .unwrap_or(Duration::from_secs(24 * 3600)),
        };

        if let (Some(l), None) = (&raw.daemon.listen, &raw.daemon.token) {
            if !daemon.listen.ip().is_loopback() {
                c.at(
                    l.span(),
                    format!(
                        "`listen`: {} is reachable from other machines, and the status pages \
                         name hosts, databases and errors: give a bearer token in [daemon] \
                         (token = {{ env = \"VARIABLE\" }}) or listen on 127.0.0.1",
                        daemon.listen
                    ),
                );
            }
        }
        let mut repositories = BTreeMap::new();
        for (name, r) in &raw.repository {
            let password = match &r.password {
                Some(p) => c.secret("password", p),
                None => {
                    c.at(
                        name.span(),
                        format!(
                            "repository {:?} has no `password`: add password = {{ file = \"/etc/sbk/password\" }} (or env, or command)",
                            name.get_ref()
                        ),
                    );
                    None
                }
            };
            let url = r.url.get_ref();
            if url.is_empty() {
                c.at(r.url.span(), "`url` is empty");
            } else if url.starts_with("s3:") && url.contains('@') {
                c.at(
                    r.url.span(),
                    "`url` may not carry credentials: use access_key_id and secret_access_key \
                     = { env = \"...\" }",
                );
            }
            let access_key_id = r
                .access_key_id
                .as_ref()
                .and_then(|s| c.secret("access_key_id", s));
            let secret_access_key = r
                .secret_access_key
                .as_ref()
                .and_then(|s| c.secret("secret_access_key", s));
            if access_key_id.is_some() != secret_access_key.is_some() {
                c.at(
                    name.span(),
                    "give both access_key_id and secret_access_key, or neither (then the \
                     standard AWS chain is used)",
                );
            }
            if let Some(n) = &r.s3_connections {
                if *n.get_ref() == 0 {
                    c.at(n.span(), "`s3_connections` must be at least 1");
                }
            }
            let s3_timeout = c.duration("s3_timeout", &r.s3_timeout);
            let retry_deadline = c.duration("retry_deadline", &r.retry_deadline);
            if let Some(password) = password {
                repositories.insert(
                    name.get_ref().clone(),
                    RepositoryConfig {
                        name: name.get_ref().clone(),
                        url: url.clone(),
                        password,
                        access_key_id,
                        secret_access_key,
                        cache_dir: r.cache_dir.clone(),
                        spool_dir: r.spool_dir.clone(),
                        no_cache: r.no_cache,
                        s3_connections: r.s3_connections.as_ref().map(|n| *n.get_ref()),
                        s3_ca_cert: r.s3_ca_cert.clone(),
                        s3_region: r.s3_region.clone(),
                        s3_timeout,
                        retry_deadline,
                        insecure: r.insecure,
                    },
                );
            }
        }

        let mut sources = BTreeMap::new();
        for (name, s) in &raw.source {
            let is_supabase = s.kind.as_ref().is_some_and(|k| k.get_ref() == "supabase");
            if let Some(k) = &s.kind {
                if !matches!(k.get_ref().as_str(), "postgres" | "supabase") {
                    c.at(
                        k.span(),
                        format!(
                            "source type {:?} is not supported: \"postgres\" or \"supabase\"",
                            k.get_ref()
                        ),
                    );
                }
            }
            if !is_supabase && s.has_supabase_fields() {
                c.at(
                    name.span(),
                    "project_url, buckets, functions_dir and the storage and API fields belong \
                     to a source with type = \"supabase\"",
                );
            }
            let mut supabase = None;
            let url = if is_supabase {
                let spec = crate::supabase::project::ProjectSpec {
                    project_url: s.project_url.as_ref().map(|u| u.get_ref().clone()),
                    db: s.url.as_ref().map(|u| u.get_ref().clone()),
                    storage_endpoint: s.storage_endpoint.clone(),
                    storage_region: s.storage_region.clone(),
                    api_url: s.api_url.clone(),
                    project_ref: s.project_ref.clone(),
                    functions_dir: s.functions_dir.clone(),
                };
                let span = s
                    .project_url
                    .as_ref()
                    .map(|u| u.span())
                    .or_else(|| s.url.as_ref().map(|u| u.span()))
                    .unwrap_or_else(|| name.span());
                let url = match spec.resolve() {
                    Ok(p) => p.db,
                    Err(e) => {
                        c.at(span, e.to_string());
                        String::new()
                    }
                };
                let mut require = (false, false);
                if let Some(r) = &s.require {
                    for part in r.get_ref() {
                        match part.as_str() {
                            "storage" => require.0 = true,
                            "functions" => require.1 = true,
                            other => c.at(
                                r.span(),
                                format!("`require`: {other:?} is not a part: storage or functions"),
                            ),
                        }
                    }
                }
                supabase = Some(SupabaseSourceConfig {
                    project: spec,
                    buckets: s.buckets.clone().unwrap_or_default(),
                    require_storage: require.0,
                    require_functions: require.1,
                    no_storage: s.no_storage.unwrap_or(false),
                    no_functions: s.no_functions.unwrap_or(false),
                    storage_access_key_id: s
                        .storage_access_key_id
                        .as_ref()
                        .and_then(|v| c.secret("storage_access_key_id", v)),
                    storage_secret_access_key: s
                        .storage_secret_access_key
                        .as_ref()
                        .and_then(|v| c.secret("storage_secret_access_key", v)),
                    access_token: s
                        .access_token
                        .as_ref()
                        .and_then(|v| c.secret("access_token", v)),
                });
                url
            } else {
                match &s.url {
                    Some(u) => u.get_ref().clone(),
                    None => {
                        c.at(name.span(), "a postgres source needs `url`");
                        String::new()
                    }
                }
            };
            if let Some(u) = &s.url {
                match has_inline_password(u.get_ref()) {
                    Ok(true) => c.at(
                        u.span(),
                        "`url` holds a password: remove it from the URL and add \
                         password = { env = \"PGPASSWORD_APP\" } (or file, or command); a \
                         ~/.pgpass file works too",
                    ),
                    Ok(false) => {}
                    Err(e) => c.at(u.span(), format!("`url`: {e}")),
                }
            }
            let password = s.password.as_ref().and_then(|p| c.secret("password", p));
            if s.all_databases && !s.databases.is_empty() {
                c.at(
                    name.span(),
                    "give `databases` or `all_databases = true`, not both",
                );
            }
            let jobs = s.jobs.as_ref().map_or(1, |j| *j.get_ref());
            if let Some(j) = &s.jobs {
                if *j.get_ref() == 0 {
                    c.at(j.span(), "`jobs` must be at least 1");
                }
            }
            sources.insert(
                name.get_ref().clone(),
                SourceConfig {
                    name: name.get_ref().clone(),
                    url,
                    supabase,
                    password,
                    databases: s.databases.clone(),
                    all_databases: s.all_databases,
                    schemas: s.schemas.clone(),
                    exclude_tables: s.exclude_tables.clone(),
                    exclude_table_data: s.exclude_table_data.clone(),
                    count_rows: s.count_rows,
                    jobs: jobs.max(1),
                    pg_bin_dir: s.pg_bin_dir.clone(),
                },
            );
        }

        let mut alerts = BTreeMap::new();
        for (name, a) in &raw.alert {
            let channel = match a.kind.get_ref().as_str() {
                "email" => {
                    let mut require = |field: &str, v: &Option<Spanned<String>>| match v {
                        Some(v) if !v.get_ref().trim().is_empty() => Some(v.get_ref().clone()),
                        _ => {
                            c.at(
                                name.span(),
                                format!("e-mail channel {:?} needs `{field}`", name.get_ref()),
                            );
                            None
                        }
                    };
                    let server = require("server", &a.server);
                    let from = require("from", &a.from);
                    let to = match &a.to {
                        Some(t) if !t.get_ref().is_empty() => t.get_ref().clone(),
                        _ => {
                            c.at(
                                name.span(),
                                format!(
                                    "e-mail channel {:?} needs `to` (a list of addresses)",
                                    name.get_ref()
                                ),
                            );
                            Vec::new()
                        }
                    };
                    for addr in to.iter().chain(from.iter()) {
                        if addr.parse::<lettre::message::Mailbox>().is_err() {
                            let span = a.to.as_ref().map_or(name.span(), |t| t.span());
                            c.at(span, format!("{addr:?} is not an e-mail address"));
                        }
                    }
                    if a.url.is_some() {
                        c.at(name.span(), "`url` belongs to webhook channels");
                    }
                    let password = a.password.as_ref().and_then(|p| c.secret("password", p));
                    if password.is_some() && a.username.is_none() {
                        c.at(name.span(), "a `password` needs a `username`");
                    }
                    let security = a.security.unwrap_or(SmtpSecurity::Starttls);
                    if let Some(s) = &server {
                        if security == SmtpSecurity::None
                            && a.username.is_some()
                            && !a.insecure
                            && !crate::repository::open::is_loopback_host(Some(s.as_str()))
                        {
                            c.at(
                                name.span(),
                                "security = \"none\" would send the SMTP password in clear to \
                                 another machine: use \"starttls\" or \"tls\", or set insecure = \
                                 true",
                            );
                        }
                    }
                    let port = a.port.unwrap_or(match security {
                        SmtpSecurity::Tls => 465,
                        SmtpSecurity::Starttls => 587,
                        SmtpSecurity::None => 25,
                    });
                    server.zip(from).map(|(server, from)| ChannelConfig::Email {
                        server,
                        port,
                        security,
                        username: a.username.clone(),
                        password,
                        from,
                        to,
                    })
                }
                "webhook" => {
                    for (field, set) in [
                        ("server", a.server.is_some()),
                        ("from", a.from.is_some()),
                        ("to", a.to.is_some()),
                        ("username", a.username.is_some()),
                        ("password", a.password.is_some()),
                    ] {
                        if set {
                            c.at(name.span(), format!("`{field}` belongs to e-mail channels"));
                        }
                    }
                    match &a.url {
                        Some(u) => c.secret("url", u).map(|url| ChannelConfig::Webhook { url }),
                        None => {
                            c.at(
                                name.span(),
                                format!(
                                    "webhook channel {:?} needs url = {{ env = \"...\" }} (a webhook \
                                     URL carries its token, so it is a secret)",
                                    name.get_ref()
                                ),
                            );
                            None
                        }
                    }
                }
                other => {
                    c.at(
                        a.kind.span(),
                        format!("alert type {other:?} is not known: \"email\" or \"webhook\""),
                    );
                    None
                }
            };
            let mut events = AlertEvents::default();
            match &a.on {
                None => {
                    events = AlertEvents {
                        failure: true,
                        recovery: true,
                    }
                }
                Some(list) => {
                    for e in list.get_ref() {
                        match e.as_str() {
                            "failure" => events.failure = true,
                            "recovery" => events.recovery = true,
                            other => c.at(
                                list.span(),
                                format!(
                                    "`on`: {other:?} is not an event: \"failure\" or \"recovery\""
                                ),
                            ),
                        }
                    }
                }
            }
            let digest = a.digest.as_ref().and_then(|d| {
                c.schedules("digest", d.span(), std::slice::from_ref(d.get_ref()))
                    .pop()
            });
            let timeout = c
                .duration("timeout", &a.timeout)
                .unwrap_or(Duration::from_secs(30));
            if let Some(channel) = channel {
                alerts.insert(
                    name.get_ref().clone(),
                    AlertConfig {
                        name: name.get_ref().clone(),
                        channel,
                        ca_file: a.ca_file.clone(),
                        timeout,
                        insecure: a.insecure,
                        events,
                        digest,
                    },
                );
            }
        }

        let mut jobs = BTreeMap::new();
        for (name, j) in &raw.job {
            let job_name = name.get_ref().clone();
            if job_name.is_empty()
                || !job_name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            {
                c.at(
                    name.span(),
                    format!(
                        "job name {job_name:?}: use letters, digits, '-', '_' and '.' (it names \
                         files and systemd units)"
                    ),
                );
            }
            if !raw
                .repository
                .keys()
                .any(|k| k.get_ref() == j.repository.get_ref())
            {
                c.at(
                    j.repository.span(),
                    format!(
                        "no repository {:?}: add a [repository.{}] table",
                        j.repository.get_ref(),
                        j.repository.get_ref()
                    ),
                );
            }
            let snapshot = j.snapshot.unwrap_or(true);
            match &j.source {
                Some(s) if !raw.source.keys().any(|k| k.get_ref() == s.get_ref()) => c.at(
                    s.span(),
                    format!(
                        "no source {:?}: add a [source.{}] table",
                        s.get_ref(),
                        s.get_ref()
                    ),
                ),
                None if snapshot => c.at(
                    name.span(),
                    format!(
                        "job {job_name:?} takes snapshots and needs a `source` (or set \
                         snapshot = false for a maintenance job)"
                    ),
                ),
                _ => {}
            }
            let schedules = c.schedules("schedule", j.schedule.span(), &j.schedule.get_ref().0);
            let retention = j.retention.as_ref().map(|r| c.retention(r));
            if retention.is_some() && j.source.is_none() {
                c.at(
                    name.span(),
                    "`retention` needs the job's `source`: it forgets that source's snapshots",
                );
            }
            let retention_scope = match &j.retention_scope {
                None => RetentionScope::Job,
                Some(v) => match v.get_ref().as_str() {
                    "job" => RetentionScope::Job,
                    "source" => RetentionScope::Source,
                    other => {
                        c.at(
                            v.span(),
                            format!("`retention_scope` {other:?}: \"job\" or \"source\""),
                        );
                        RetentionScope::Job
                    }
                },
            };
            if retention.is_some() && !snapshot && retention_scope == RetentionScope::Job {
                c.at(
                    j.retention.as_ref().map_or(name.span(), |r| r.span()),
                    format!(
                        "job {job_name:?} takes no snapshots, so a retention of its own \
                         snapshots has nothing to forget: set retention_scope = \"source\" to \
                         apply it to every snapshot of its source"
                    ),
                );
            }
            let prune = c.step_when("prune", &j.prune);
            let check = c.step_when("check", &j.check);
            let drill = c.step_when("drill", &j.drill);
            let prune_max_unused = match &j.prune_max_unused {
                None => MaxUnused::Percent(5.0),
                Some(v) => v.get_ref().parse().unwrap_or_else(|e| {
                    c.at(v.span(), format!("`prune_max_unused`: {e}"));
                    MaxUnused::Percent(5.0)
                }),
            };
            let prune_grace = c.duration("prune_grace", &j.prune_grace);
            let check_read_data = match &j.check_read_data {
                None => ReadData::None,
                Some(v) if v.get_ref() == "all" => ReadData::All,
                Some(v) if v.get_ref() == "none" => ReadData::None,
                Some(v) => v.get_ref().parse().unwrap_or_else(|e| {
                    c.at(
                        v.span(),
                        format!("`check_read_data`: {e}; or \"all\", or \"none\""),
                    );
                    ReadData::None
                }),
            };
            let drill_password = j
                .drill_password
                .as_ref()
                .and_then(|p| c.secret("drill_password", p));
            if let Some(s) = &j.drill_scratch {
                if let Ok(true) = has_inline_password(s.get_ref()) {
                    c.at(
                        s.span(),
                        "`drill_scratch` holds a password: remove it and add \
                         drill_password = { env = \"...\" }",
                    );
                }
            }
            if !drill.is_never() && (j.drill_scratch.is_none() || j.source.is_none()) {
                let span = j.drill.as_ref().map_or(name.span(), |d| d.span());
                c.at(
                    span,
                    "`drill` needs `drill_scratch` (a PostgreSQL server to restore into) and the \
                     job's `source`",
                );
            }
            let max_age = c
                .duration("max_age", &j.max_age)
                .unwrap_or_else(|| default_max_age(&schedules));
            let retry_delay = c
                .duration("retry_delay", &j.retry_delay)
                .unwrap_or(Duration::from_secs(3600));
            let alert_names = match &j.alerts {
                None => raw.alert.keys().map(|k| k.get_ref().clone()).collect(),
                Some(list) => {
                    for a in list.get_ref() {
                        if !raw.alert.keys().any(|k| k.get_ref() == a) {
                            c.at(
                                list.span(),
                                format!("no alert channel {a:?}: add an [alert.{a}] table"),
                            );
                        }
                    }
                    list.get_ref().clone()
                }
            };
            jobs.insert(
                job_name.clone(),
                JobConfig {
                    name: job_name,
                    source: j.source.as_ref().map(|s| s.get_ref().clone()),
                    repository: j.repository.get_ref().clone(),
                    schedules,
                    snapshot,
                    tags: j.tags.clone(),
                    no_delta: j.no_delta,
                    retention,
                    retention_scope,
                    prune,
                    prune_max_unused,
                    prune_grace,
                    check,
                    check_read_data,
                    drill,
                    drill_scratch: j.drill_scratch.as_ref().map(|s| s.get_ref().clone()),
                    drill_password,
                    max_age,
                    retries: j.retries.unwrap_or(1),
                    retry_delay,
                    alerts: alert_names,
                },
            );
        }
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
fn default_max_age(schedules: &[Schedule]) -> Duration {
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
