//! What a configuration names, made real for a run: the repository opened, a source's
//! connection and snapshot filter, a job's alert channels.

use super::*;

/// How a configured repository is reached, without credentials (shared with
/// [`crate::automation::probe`], which supplies its own already-resolved keys).
pub fn remote_options(r: &RepositoryConfig) -> crate::repository::open::RemoteOptions {
    let mut remote = crate::repository::open::RemoteOptions::default();
    if let Some(n) = r.s3_connections {
        remote.connections = n as usize;
    }
    remote.ca_cert = r.s3_ca_cert.clone();
    remote.insecure = r.insecure;
    remote.region = r.s3_region.clone();
    if let Some(t) = r.s3_timeout {
        remote.io_timeout = t;
    }
    if let Some(d) = r.retry_deadline {
        remote.retry_deadline = d;
    }
    remote
}

/// What a restored server needs to fetch WAL from a configured repository (a base backup's
/// drill).
pub struct WalFetchSetup {
    /// The start of its `restore_command`: this sbk binary with the repository's location and
    /// options.
    pub command: String,
    /// The repository password (the drill writes it to a private file).
    pub password: Zeroizing<String>,
    /// S3 credentials for the server's environment.
    pub env: Vec<(String, String)>,
}

/// [`WalFetchSetup`] of repository `r`.
pub fn wal_fetch_setup(r: &RepositoryConfig) -> Result<WalFetchSetup> {
    use crate::commands::restore_physical::command_word;
    let what = |field: &str| format!("{field} of repository {}", r.name);
    let exe = std::env::current_exe()
        .map_err(|e| Error::Invalid(format!("cannot find the running sbk binary: {e}")))?;
    let mut words = vec![exe.display().to_string(), "-q".into(), "-r".into()];
    words.push(match std::path::Path::new(&r.url).canonicalize() {
        Ok(p) if !r.url.starts_with("s3:") => p.display().to_string(),
        _ => r.url.clone(),
    });
    if let Some(c) = &r.s3_ca_cert {
        words.extend(["--s3-ca-cert".into(), c.display().to_string()]);
    }
    if let Some(region) = &r.s3_region {
        words.extend(["--s3-region".into(), region.clone()]);
    }
    if r.insecure {
        words.push("--insecure".into());
    }
    if let Some(d) = &r.cache_dir {
        words.extend(["--cache-dir".into(), d.display().to_string()]);
    }
    let mut env = Vec::new();
    if let (Some(id), Some(secret)) = (&r.access_key_id, &r.secret_access_key) {
        env.push((
            "AWS_ACCESS_KEY_ID".to_string(),
            id.resolve(&what("access_key_id"))?.to_string(),
        ));
        env.push((
            "AWS_SECRET_ACCESS_KEY".to_string(),
            secret.resolve(&what("secret_access_key"))?.to_string(),
        ));
    }
    let command = words
        .iter()
        .map(|w| command_word(w))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(WalFetchSetup {
        command,
        password: r.password.resolve(&what("password"))?,
        env,
    })
}

/// Opens a configured repository; `offline_start` for runs that snapshot (see
/// [`crate::repository::open::OpenOptions::offline_start`]).
pub fn open_repository(
    r: &RepositoryConfig,
    offline_start: bool,
) -> Result<(Repository, Arc<crate::repository::open::TimedBackend>)> {
    let mut remote = remote_options(r);
    let what = |field: &str| format!("{field} of repository {}", r.name);
    if let (Some(id), Some(secret)) = (&r.access_key_id, &r.secret_access_key) {
        remote.credentials = Some(crate::repository::open::StaticCredentials {
            access_key_id: id.resolve(&what("access_key_id"))?.to_string(),
            secret_access_key: secret.resolve(&what("secret_access_key"))?,
        });
    }
    let opts = crate::repository::open::OpenOptions {
        location: r.url.clone(),
        remote,
        cache_dir: r.cache_dir.clone(),
        spool_dir: r.spool_dir.clone(),
        no_cache: r.no_cache,
        no_spool: false,
        offline_start,
    };
    let password = r.password.resolve(&what("password"))?;
    opts.open_timed(password.as_bytes())
}

/// Connection parameters of a source, its password taken from the configured secret.
pub fn source_conn(s: &SourceConfig) -> Result<ConnParams> {
    let password: Option<Zeroizing<String>> = match &s.password {
        Some(p) => Some(p.resolve(&format!("password of source {}", s.name))?),
        None => None,
    };
    source_conn_with(s, password.as_deref().map(String::as_str))
}

/// Connection parameters of a source with its password already read (or none configured).
pub fn source_conn_with(s: &SourceConfig, password: Option<&str>) -> Result<ConnParams> {
    let lookup = |var: &str| -> Option<String> {
        match (password, var) {
            (Some(p), "PGPASSWORD") => Some(p.to_owned()),
            _ => process_env(var),
        }
    };
    let conn = ConnParams::resolve(Some(&s.url), &lookup)?;
    if let Some(w) = conn.tls_warning() {
        tracing::warn!(source = %s.name, "{w}");
    }
    Ok(conn)
}

/// The snapshots a source's retention and drill apply to: a PostgreSQL server (whatever its
/// databases), its base backups, or a Supabase project.
pub fn source_filter(s: &SourceConfig) -> Result<crate::repository::Source> {
    match &s.supabase {
        Some(sb) => {
            let project = sb.project.resolve()?;
            Ok(commands::snapshot_supabase::project_filter(&project))
        }
        None if s.physical => {
            let mut filter = commands::snapshot_postgres::server_filter(&source_conn(s)?);
            filter.kind = commands::snapshot_physical::SOURCE_KIND.into();
            Ok(filter)
        }
        None => Ok(commands::snapshot_postgres::server_filter(&source_conn(s)?)),
    }
}

/// The alert channels of a job, their secrets resolved (a channel whose secret cannot be read
/// is left out, and logged).
pub fn channels(
    config: &Config,
    names: &[String],
) -> Vec<(Channel, crate::automation::config::AlertEvents)> {
    let mut out = Vec::new();
    for name in names {
        let Some(a) = config.alerts.get(name) else {
            continue;
        };
        let resolved = match &a.channel {
            ChannelConfig::Email {
                server,
                port,
                security,
                username,
                password,
                from,
                to,
            } => password
                .as_ref()
                .map(|p| p.resolve(&format!("password of alert channel {name}")))
                .transpose()
                .map(|password| {
                    Channel::Email(EmailChannel {
                        name: name.clone(),
                        server: server.clone(),
                        port: *port,
                        security: *security,
                        username: username.clone(),
                        password,
                        from: from.clone(),
                        to: to.clone(),
                        ca_file: a.ca_file.clone(),
                        timeout: a.timeout,
                        insecure: a.insecure,
                    })
                }),
            ChannelConfig::Webhook { url } => url
                .resolve(&format!("url of alert channel {name}"))
                .map(|url| {
                    Channel::Webhook(WebhookChannel {
                        name: name.clone(),
                        url,
                        ca_file: a.ca_file.clone(),
                        timeout: a.timeout,
                        insecure: a.insecure,
                    })
                }),
        };
        match resolved {
            Ok(c) => out.push((c, a.events)),
            Err(e) => {
                tracing::error!(channel = %name, "alert channel unusable: {}", redact(&e.to_string()))
            }
        }
    }
    out
}
