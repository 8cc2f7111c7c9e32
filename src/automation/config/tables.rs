//! Each table of the configuration file checked into its part of the model: daemon,
//! repositories, sources, alert channels, jobs.

use super::check::{default_max_age, has_inline_password, Checker};
use super::*;

/// The tables of the file, each checked into its part of the model.
impl Checker<'_> {
    /// The `[daemon]` table.
    pub(super) fn daemon(&mut self, raw: &RawFile) -> DaemonConfig {
        let c = self;
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
        daemon
    }

    /// The `[repository.NAME]` tables.
    pub(super) fn repositories(&mut self, raw: &RawFile) -> BTreeMap<String, RepositoryConfig> {
        let c = self;
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
        repositories
    }

    /// The `[source.NAME]` tables.
    pub(super) fn sources(&mut self, raw: &RawFile) -> BTreeMap<String, SourceConfig> {
        let c = self;
        let mut sources = BTreeMap::new();
        for (name, s) in &raw.source {
            let is_supabase = s.kind.as_ref().is_some_and(|k| k.get_ref() == "supabase");
            let physical = s
                .kind
                .as_ref()
                .is_some_and(|k| k.get_ref() == "postgres-physical");
            if let Some(k) = &s.kind {
                if !matches!(
                    k.get_ref().as_str(),
                    "postgres" | "postgres-physical" | "supabase"
                ) {
                    c.at(
                        k.span(),
                        format!(
                            "source type {:?} is not supported: \"postgres\" (dumps), \
                             \"postgres-physical\" (base backups) or \"supabase\"",
                            k.get_ref()
                        ),
                    );
                }
            }
            if physical {
                let set = s.dump_fields();
                if !set.is_empty() {
                    c.at(
                        name.span(),
                        format!(
                            "{} belong to a source with type = \"postgres\" (dumps): a base \
                             backup (type = \"postgres-physical\") copies the whole cluster",
                            set.iter()
                                .map(|f| format!("`{f}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
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
                    physical,
                },
            );
        }
        sources
    }

    /// The `[alert.NAME]` tables.
    pub(super) fn alerts(&mut self, raw: &RawFile) -> BTreeMap<String, AlertConfig> {
        let c = self;
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
        alerts
    }

    /// The `[job.NAME]` tables (their references to the other tables checked against the file).
    pub(super) fn jobs(&mut self, raw: &RawFile) -> BTreeMap<String, JobConfig> {
        let c = self;
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
            let compression =
                j.compression.as_ref().and_then(|v| match v
                    .get_ref()
                    .parse::<crate::format::config::CompressionChoice>(
                ) {
                    Ok(choice) => Some(choice.level()),
                    Err(e) => {
                        c.at(v.span(), format!("`compression`: {e}"));
                        None
                    }
                });
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
            let source = j
                .source
                .as_ref()
                .and_then(|s| raw.source.iter().find(|(k, _)| k.get_ref() == s.get_ref()));
            let physical = source.is_some_and(|(_, s)| {
                s.kind
                    .as_ref()
                    .is_some_and(|k| k.get_ref() == "postgres-physical")
            });
            if physical && !drill.is_never() && j.drill_scratch.is_some() {
                let span = j.drill_scratch.as_ref().map_or(name.span(), |d| d.span());
                c.at(
                    span,
                    "the source of this job takes base backups (type = \"postgres-physical\"): \
                     their drill restores into a scratch folder and recovers it with a private \
                     server, so `drill_scratch` (a server for dumps) has no use here",
                );
            }
            let wal_lag = wal_lag_of(c, j, physical && snapshot, &job_name);
            let needs_server = !physical && j.drill_scratch.is_none();
            if !drill.is_never() && (needs_server || j.source.is_none()) {
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
                    compression,
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
                    wal_lag,
                },
            );
        }
        jobs
    }
}

/// A job's `wal_lag_alert` and `wal_lag_interval`: only for a job taking base backups
/// (`watched`), where they default to [`DEFAULT_WAL_LAG_ALERT`] and [`DEFAULT_WAL_LAG_INTERVAL`].
fn wal_lag_of(
    c: &mut Checker<'_>,
    j: &RawJob,
    watched: bool,
    job_name: &str,
) -> Option<WalLagConfig> {
    if !watched {
        for (field, v) in [
            ("wal_lag_alert", &j.wal_lag_alert),
            ("wal_lag_interval", &j.wal_lag_interval),
        ] {
            if let Some(v) = v {
                c.at(
                    v.span(),
                    format!(
                        "`{field}`: job {job_name:?} takes no base backups; the WAL archive's \
                         lag is watched by the job whose source has type = \"postgres-physical\""
                    ),
                );
            }
        }
        return None;
    }
    let alert = match &j.wal_lag_alert {
        Some(v) if v.get_ref() == "off" => None,
        Some(_) => match c.duration("wal_lag_alert", &j.wal_lag_alert) {
            Some(d) if d.is_zero() => {
                let span = j
                    .wal_lag_alert
                    .as_ref()
                    .map(|v| v.span())
                    .unwrap_or_default();
                c.at(
                    span,
                    "`wal_lag_alert`: 0 would alert whenever a segment is being written; give a \
                     duration such as \"15m\", or \"off\"",
                );
                None
            }
            d => d.or(Some(DEFAULT_WAL_LAG_ALERT)),
        },
        None => Some(DEFAULT_WAL_LAG_ALERT),
    };
    let interval = match c.duration("wal_lag_interval", &j.wal_lag_interval) {
        Some(d) if d.is_zero() => {
            let span = j
                .wal_lag_interval
                .as_ref()
                .map(|v| v.span())
                .unwrap_or_default();
            c.at(span, "`wal_lag_interval` must be longer than 0s");
            DEFAULT_WAL_LAG_INTERVAL
        }
        Some(d) => d,
        None => DEFAULT_WAL_LAG_INTERVAL,
    };
    Some(WalLagConfig { alert, interval })
}
