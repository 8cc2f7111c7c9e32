//! Throwaway PostgreSQL clusters for tests: the system's `initdb`/`pg_ctl` (found through
//! `pg_config --bindir` or `/usr/lib/postgresql/*/bin`), a temporary folder, a free loopback port,
//! password (SCRAM) authentication, run as `nobody` when the tests run as root; stopped and
//! removed on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The PostgreSQL server programs' folder.
pub fn bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return dir;
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run `apt-get install postgresql` (.ci/run does)")
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let d = e.path().join("bin");
            d.join("initdb").is_file().then_some((v, d))
        })
        .collect();
    found.sort();
    found.pop().expect("no initdb under /usr/lib/postgresql").1
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A running cluster. The superuser is `postgres` with password [`Cluster::password`].
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub password: String,
    pub bin: PathBuf,
    data: PathBuf,
}

/// Extra `postgresql.conf` lines and files for a cluster (TLS).
#[derive(Default)]
pub struct ClusterOptions {
    pub conf: Vec<String>,
    /// Files to place in the data folder (name, contents) before start.
    pub files: Vec<(String, Vec<u8>)>,
}

/// A free loopback port (free when asked: a race with other tests stays possible).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_with(ClusterOptions::default())
    }

    pub fn start_with(opts: ClusterOptions) -> Self {
        let bin = bindir();
        let dir = tempfile::Builder::new()
            .prefix("sbk-pg-")
            .tempdir()
            .unwrap();
        let password = format!("pw-{:x}", rand_u64());
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).unwrap();
        if is_root() {
            let s = Command::new("chown")
                .args(["-R", "nobody"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(s.success());
        }
        let data = dir.path().join("data");
        let out = as_owner(Command::new(bin.join("initdb")))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", text(&out.stderr));
        let mut conf = String::from("\nfsync = off\nshared_buffers = 16MB\nmax_connections = 30\n");
        for line in &opts.conf {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&data.join("postgresql.conf"), &conf);
        for (name, contents) in &opts.files {
            let p = data.join(name);
            std::fs::write(&p, contents).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            if is_root() {
                Command::new("chown")
                    .arg("nobody")
                    .arg(&p)
                    .status()
                    .unwrap();
            }
        }
        // Ports can race with other tests: retry on another one.
        for _ in 0..5 {
            let port = free_port();
            let out = as_owner(Command::new(bin.join("pg_ctl")))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1",
                    dir.path().display()
                ))
                .arg("start")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if out.status.success() {
                return Cluster {
                    dir,
                    port,
                    password,
                    bin,
                    data,
                };
            }
        }
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        panic!("pg_ctl start failed: {log}");
    }

    /// The cluster's data folder.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data
    }

    /// `postgresql://postgres:PASSWORD@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// A URL without the password (for tests that give it another way).
    pub fn url_without_password(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A client program of this cluster's version with the connection in the environment.
    pub fn client(&self, program: &str, db: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", &self.password)
            .env("PGDATABASE", db)
            .stdin(Stdio::null());
        c
    }

    /// Runs SQL with psql (stopping at the first error) and returns its output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .client("psql", db)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}\n{sql}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `pg_dump --schema-only` text of `db`, for comparing two databases.
    pub fn schema_text(&self, db: &str) -> String {
        let out = self
            .client("pg_dump", db)
            .args(["--schema-only", "--no-owner"])
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_dump: {}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            // Comment lines carry the dump's time and version; \restrict lines a random key.
            .filter(|l| {
                !l.starts_with("--")
                    && !l.starts_with("\\restrict")
                    && !l.starts_with("\\unrestrict")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// md5 of every user table's rows in a fixed order, for comparing two databases.
    pub fn table_digests(&self, db: &str) -> Vec<(String, String)> {
        let tables = self.psql(
            db,
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
        );
        tables
            .lines()
            .map(|t| {
                let sql = format!(
                    "SELECT count(*) || ':' || coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '') FROM {t} r"
                );
                (t.to_string(), self.psql(db, &sql).trim().to_string())
            })
            .collect()
    }

    /// A cluster from an existing data folder `data` inside `dir` (a restored base backup,
    /// owned by the server's user), started on a free port; `password` is its superuser's.
    pub fn start_existing(dir: tempfile::TempDir, data: PathBuf, password: &str) -> Self {
        let c = Cluster {
            dir,
            port: free_port(),
            password: password.to_string(),
            bin: bindir(),
            data,
        };
        c.restart();
        c
    }

    /// Starts the server again after [`Cluster::kill`], on the same port.
    pub fn restart(&self) {
        let out = as_owner(Command::new(self.bin.join("pg_ctl")))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.dir.path().display()
            ))
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            text(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
    }

    /// Stops the server at once (as a crash would).
    pub fn kill(&self) {
        let _ = as_owner(Command::new(self.bin.join("pg_ctl")))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .output();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            self.kill();
        }
    }
}

/// `c` (program, arguments and environment) run as the cluster's owner when the tests run as
/// root: PostgreSQL refuses root, so what starts a server (`sbk restore --start`, a drill) runs
/// as its user.
pub fn as_server(c: Command) -> Command {
    if !is_root() {
        return c;
    }
    let mut r = as_owner(Command::new(c.get_program()));
    r.args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => r.env(k, v),
            None => r.env_remove(k),
        };
    }
    r
}

/// Runs a server program as the cluster's owner.
fn as_owner(c: Command) -> Command {
    if !is_root() {
        return c;
    }
    let mut r = Command::new("runuser");
    r.args(["-u", "nobody", "--"]).arg(c.get_program());
    r.args(c.get_args());
    r
}

fn append(p: &Path, s: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
    f.write_all(s.as_bytes()).unwrap();
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// Runs `sbk` through `repo` and returns its output, asserting success.
pub fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        text(&out.stderr)
    );
    out
}
