//! Connection parameters, resolved the way libpq resolves them: a `postgresql://` URL or a
//! `key=value` conninfo string, then the `PG*` environment variables, then libpq's defaults, and
//! the password from the URL, `PGPASSWORD` or the password file (`PGPASSFILE`, `~/.pgpass`).
//!
//! The same resolved parameters drive the tokio-postgres connection and the PostgreSQL client
//! programs sbk runs (`pg_dump`, `pg_restore`, `psql`), which get them through `PG*` environment
//! variables and the password through a private password file: never on a command line.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::Invalid(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where to find the environment: the process's, or a fixed map in tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Fully resolved connection parameters. `Debug` never shows the password.
#[derive(Clone)]
pub struct ConnParams {
    /// Host name, IP address, or a Unix-socket folder (starts with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    /// Whether the database was named (URL, conninfo or `PGDATABASE`) rather than libpq's
    /// default, the user name.
    pub dbname_given: bool,
    password: Option<Zeroizing<String>>,
    pub sslmode: SslMode,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub application_name: Option<String>,
    pub connect_timeout: Option<Duration>,
    pub options: Option<String>,
}

impl std::fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("sslmode", &self.sslmode)
            .finish()
    }
}

/// The `PG*` variable for each conninfo keyword sbk understands.
const KEYWORDS: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("port", "PGPORT"),
    ("user", "PGUSER"),
    ("dbname", "PGDATABASE"),
    ("password", "PGPASSWORD"),
    ("passfile", "PGPASSFILE"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("application_name", "PGAPPNAME"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("options", "PGOPTIONS"),
];

impl ConnParams {
    /// Resolves `spec` (a URL, a conninfo string, or nothing) against the environment.
    pub fn resolve(spec: Option<&str>, env: EnvLookup<'_>) -> Result<Self> {
        let mut given = match spec.map(str::trim).filter(|s| !s.is_empty()) {
            None => BTreeMap::new(),
            Some(s) if s.starts_with("postgresql://") || s.starts_with("postgres://") => {
                parse_url(s)?
            }
            Some(s) if s.contains('=') => parse_conninfo(s)?,
            // A bare word is a database name, as for psql.
            Some(s) => BTreeMap::from([("dbname".to_string(), s.to_string())]),
        };
        for (key, var) in KEYWORDS {
            if !given.contains_key(*key) {
                if let Some(v) = env(var) {
                    given.insert(key.to_string(), v);
                }
            }
        }
        let get = |k: &str| given.get(k).cloned().filter(|v| !v.is_empty());
        let host = get("host").unwrap_or_else(default_host);
        if host.contains(',') {
            return Err(Error::Invalid(
                "several hosts in one connection string are not supported: give one".into(),
            ));
        }
        let port = match get("port") {
            None => 5432,
            Some(p) => p
                .parse()
                .map_err(|_| Error::Invalid(format!("port {p:?} is not a port number")))?,
        };
        let user = get("user")
            .or_else(|| env("USER"))
            .or_else(|| env("LOGNAME"))
            .unwrap_or_else(|| "postgres".into());
        let dbname_given = get("dbname").is_some();
        let dbname = get("dbname").unwrap_or_else(|| user.clone());
        let sslmode = SslMode::parse(&get("sslmode").unwrap_or_else(|| "prefer".into()))?;
        let connect_timeout = match get("connect_timeout") {
            None => None,
            Some(t) => Some(Duration::from_secs(t.parse().map_err(|_| {
                Error::Invalid(format!("connect_timeout {t:?} is not a number of seconds"))
            })?)),
        };
        let mut params = ConnParams {
            host,
            port,
            user,
            dbname,
            dbname_given,
            password: get("password").map(Zeroizing::new),
            sslmode,
            sslrootcert: get("sslrootcert"),
            sslcert: get("sslcert").map(PathBuf::from),
            sslkey: get("sslkey").map(PathBuf::from),
            application_name: get("application_name"),
            connect_timeout,
            options: get("options"),
        };
        if params.password.is_none() {
            let passfile = get("passfile")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
            if let Some(file) = passfile {
                params.password = passfile_lookup(&file, &params).map(Zeroizing::new);
            }
        }
        Ok(params)
    }

    /// The same server and credentials, another database.
    pub fn with_dbname(&self, dbname: &str) -> Self {
        let mut p = self.clone();
        p.dbname = dbname.to_string();
        p.dbname_given = true;
        p
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref().map(String::as_str)
    }

    /// Whether the host is a Unix-socket folder.
    pub fn is_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// `host:port` (or the socket folder) for messages.
    pub fn server(&self) -> String {
        if self.is_socket() {
            format!("{} (socket, port {})", self.host, self.port)
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// A warning when the connection leaves this machine without checking whose server it
    /// reaches (`sslmode` below `verify-full`): a machine in the middle could read the dump or
    /// serve a forged one. `None` on loopback and Unix sockets.
    pub fn tls_warning(&self) -> Option<String> {
        let local =
            self.host.starts_with('/') || crate::backend::is_loopback_host(Some(&self.host));
        if local || self.sslmode == SslMode::VerifyFull {
            return None;
        }
        Some(format!(
            "warning: the connection to {} does not verify the server's certificate \
             (sslmode={}): use sslmode=verify-full with sslrootcert (docs/postgres.md, \
             \"Verifying the server\")",
            self.host,
            self.sslmode.as_str()
        ))
    }

    /// Sets up `cmd` (a PostgreSQL client program) to connect with these parameters: it
    /// inherits only [`CHILD_ENV`] and `LC_*`, the `PG*` variables are the resolved ones, and
    /// the password goes into a
    /// private password file that must outlive the program (keep the returned guard).
    pub fn configure_command(&self, cmd: &mut Command) -> Result<ChildAuth> {
        // Only what a client program needs: sbk's own environment may hold secrets (a
        // daemon's configured secret variables, cloud credentials), which are not its business.
        cmd.env_clear();
        for (name, value) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if CHILD_ENV.contains(&n.as_ref()) || n.starts_with("LC_") {
                cmd.env(&name, value);
            }
        }
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", &self.dbname)
            .env("PGSSLMODE", self.sslmode.as_str());
        let optional = [
            ("PGSSLROOTCERT", self.sslrootcert.clone()),
            (
                "PGSSLCERT",
                self.sslcert.as_ref().map(|p| p.display().to_string()),
            ),
            (
                "PGSSLKEY",
                self.sslkey.as_ref().map(|p| p.display().to_string()),
            ),
            ("PGAPPNAME", self.application_name.clone()),
            (
                "PGCONNECT_TIMEOUT",
                self.connect_timeout.map(|t| t.as_secs().to_string()),
            ),
            ("PGOPTIONS", self.options.clone()),
        ];
        for (var, value) in optional {
            if let Some(v) = value {
                cmd.env(var, v);
            }
        }
        let passfile = match self.password() {
            None => {
                // No password: make sure the user's ~/.pgpass is not consulted for another one.
                cmd.env("PGPASSFILE", "/dev/null");
                None
            }
            Some(pw) => {
                // In sbk's private folder, named by this process: a run killed with SIGKILL
                // leaves it only until the next run sweeps it.
                let dir = crate::cleanup::private_dir()?;
                let mut f = tempfile::Builder::new()
                    .prefix(&crate::cleanup::private_prefix("pgpass"))
                    .tempfile_in(&dir)
                    .map_err(|e| Error::io("create", &dir, e))?;
                let tracked = crate::cleanup::track_path(f.path());
                // tempfile creates the file readable by its owner only (0600), as libpq demands.
                writeln!(f, "*:*:*:*:{}", escape_passfile(pw))
                    .and_then(|_| f.flush())
                    .map_err(|e| Error::io("write", f.path(), e))?;
                cmd.env("PGPASSFILE", f.path());
                Some((f, tracked))
            }
        };
        Ok(ChildAuth {
            _passfile: passfile,
        })
    }
}

/// The variables a PostgreSQL client program inherits (besides `LC_*` and the `PG*` ones sbk
/// sets): finding programs and files, the locale, time zone, temporary folder, and Kerberos's
/// credential cache and configuration (GSSAPI authentication).
const CHILD_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "KRB5CCNAME",
    "KRB5_CONFIG",
];

/// Keeps a child's private password file until dropped.
pub struct ChildAuth {
    _passfile: Option<(tempfile::NamedTempFile, crate::cleanup::TrackedPath)>,
}

/// libpq's compiled-in default on Debian is the socket folder `/var/run/postgresql`.
fn default_host() -> String {
    for dir in ["/var/run/postgresql", "/tmp"] {
        if Path::new(dir).join(".s.PGSQL.5432").exists() {
            return dir.to_string();
        }
    }
    "localhost".to_string()
}

fn decode(s: &str) -> Result<String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| Error::Invalid("the connection URL is not valid UTF-8 once decoded".into()))
}

fn parse_url(s: &str) -> Result<BTreeMap<String, String>> {
    // The error never echoes the URL: it may hold a password.
    // libpq takes a user with no host (`postgresql://user@/db?host=/run/postgresql`), which a
    // URL parser refuses: parse it with a placeholder host, then drop that.
    const NO_HOST: &str = "sbk-no-host.invalid";
    let parsed = match url::Url::parse(s) {
        Err(url::ParseError::EmptyHost) => s
            .split_once("://")
            .and_then(|(scheme, rest)| {
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let (auth, tail) = rest.split_at(end);
                let (user, hostport) = match auth.rsplit_once('@') {
                    Some((user, hostport)) => (format!("{user}@"), hostport),
                    None => (String::new(), auth),
                };
                if !(hostport.is_empty() || hostport.starts_with(':')) {
                    return None;
                }
                url::Url::parse(&format!("{scheme}://{user}{NO_HOST}{hostport}{tail}")).ok()
            })
            .ok_or(url::ParseError::EmptyHost),
        other => other,
    };
    let url =
        parsed.map_err(|e| Error::Invalid(format!("the connection URL cannot be parsed: {e}")))?;
    let mut out = BTreeMap::new();
    if let Some(host) = url.host_str().filter(|h| !h.is_empty() && *h != NO_HOST) {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        out.insert("host".into(), decode(host)?);
    }
    if let Some(port) = url.port() {
        out.insert("port".into(), port.to_string());
    }
    if !url.username().is_empty() {
        out.insert("user".into(), decode(url.username())?);
    }
    if let Some(pw) = url.password() {
        out.insert("password".into(), decode(pw)?);
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() {
        out.insert("dbname".into(), decode(db)?);
    }
    for (k, v) in url.query_pairs() {
        out.insert(k.into_owned(), v.into_owned());
    }
    check_keywords(&out)?;
    Ok(out)
}

/// `key=value` pairs separated by spaces; values may be single-quoted with `\'` and `\\`.
fn parse_conninfo(s: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(Error::Invalid(format!(
                "connection string: missing \"=\" after {key:?}"
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(Error::Invalid(format!(
                            "connection string: unterminated quoted value for {key:?}"
                        )))
                    }
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.insert(key, value);
    }
    check_keywords(&out)?;
    Ok(out)
}

fn check_keywords(given: &BTreeMap<String, String>) -> Result<()> {
    for key in given.keys() {
        if !KEYWORDS.iter().any(|(k, _)| k == key) {
            return Err(Error::Invalid(format!(
                "connection parameter {key:?} is not supported by sbk (supported: {})",
                KEYWORDS
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(())
}

fn escape_passfile(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

/// Splits a password-file line into its five fields (`\:` and `\\` unescaped).
fn passfile_fields(line: &str) -> Option<[String; 5]> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    fields.try_into().ok()
}

/// libpq's password-file rule: the first line whose host, port, database and user match (`*`
/// matches anything; a socket connection matches `localhost`). A file that others can read is
/// ignored, as libpq does.
fn passfile_lookup(file: &Path, p: &ConnParams) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = if p.is_socket() { "localhost" } else { &p.host };
    let port = p.port.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(passfile_fields)
        .find(|[h, pt, d, u, _]| {
            let m = |field: &str, value: &str| field == "*" || field == value;
            m(h, host) && m(pt, &port) && m(d, &p.dbname) && m(u, &p.user)
        })
        .map(|[.., pw]| pw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn url_wins_over_environment() {
        let env = env_of(&[
            ("PGHOST", "envhost"),
            ("PGPORT", "6000"),
            ("PGUSER", "envuser"),
        ]);
        let p = ConnParams::resolve(
            Some("postgresql://al%40ice:p%3Ass@db.example:5433/app?sslmode=require"),
            &env,
        )
        .unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.user.as_str(), p.dbname.as_str()),
            ("db.example", 5433, "al@ice", "app")
        );
        assert_eq!(p.password(), Some("p:ss"));
        assert_eq!(p.sslmode, SslMode::Require);
        assert!(!format!("{p:?}").contains("p:ss"));
    }

    #[test]
    fn environment_and_defaults_fill_gaps() {
        let env = env_of(&[
            ("PGHOST", "h"),
            ("PGUSER", "u"),
            ("PGSSLMODE", "verify-full"),
        ]);
        let p = ConnParams::resolve(Some("dbname='my db' port=6543"), &env).unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.user.as_str(), p.dbname.as_str()),
            ("h", 6543, "u", "my db")
        );
        assert_eq!(p.sslmode, SslMode::VerifyFull);
        let p = ConnParams::resolve(None, &env).unwrap();
        assert_eq!(p.dbname, "u");
        let p = ConnParams::resolve(Some("postgresql://alice@/app?host=/run/postgresql"), &env)
            .unwrap();
        assert_eq!(
            (p.host.as_str(), p.user.as_str(), p.dbname.as_str()),
            ("/run/postgresql", "alice", "app")
        );
        let p = ConnParams::resolve(Some("postgresql://alice:pw@:5433/app"), &env).unwrap();
        assert_eq!((p.port, p.user.as_str()), (5433, "alice"));
        let p = ConnParams::resolve(Some("postgresql:///x?host=/run/pg"), &env).unwrap();
        assert!(p.is_socket());
        assert_eq!(p.dbname, "x");
    }

    #[test]
    fn bad_input_is_refused_without_echoing_secrets() {
        let env = env_of(&[]);
        for bad in [
            "postgresql://u:secret@h:notaport/db",
            "postgresql://u:secret@h/db?sslmode=sometimes",
            "postgresql://u:secret@h/db?weird=1",
            "host=h password='secret",
        ] {
            let e = ConnParams::resolve(Some(bad), &env)
                .unwrap_err()
                .to_string();
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn passfile_rules() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:no\nlocalhost:5432:*:alice:sock\\:pw\ndb:*:app:*:right\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let f = file.display().to_string();
        let env = env_of(&[("PGPASSFILE", &f)]);
        let p = ConnParams::resolve(Some("host=db dbname=app user=bob"), &env).unwrap();
        assert_eq!(p.password(), Some("right"));
        let p = ConnParams::resolve(Some("host=/sock user=alice"), &env).unwrap();
        assert_eq!(p.password(), Some("sock:pw"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let p = ConnParams::resolve(Some("host=db dbname=app user=bob"), &env).unwrap();
        assert_eq!(p.password(), None, "a world-readable file is ignored");
        assert_eq!(
            passfile_fields("a\\:b:*:*:*:p:w").unwrap()[4],
            "p:w",
            "the last field keeps colons"
        );
        assert_eq!(escape_passfile("a:b\\c"), "a\\:b\\\\c");
    }
}
