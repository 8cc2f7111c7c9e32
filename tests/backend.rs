//! The backend contract (`src/backend/mod.rs`), one suite run against every backend: a local
//! folder and a real S3 server over HTTP.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use common::s3::S3Server;
use common::seaweed::Seaweed;
use sbk::backend::s3::S3Backend;
use sbk::backend::{local::LocalBackend, Backend, ErrorKind, FileType};

fn name(i: u32) -> String {
    format!("{:064x}", (i as u128) * 0x9E37_79B9_7F4A_7C15_u128 + 1)
}

/// A staged file, removed when dropped unless the backend moved it into place.
fn staged(data: &[u8]) -> tempfile::TempPath {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(data).unwrap();
    f.into_temp_path()
}

/// Every point of the contract, on an empty location.
fn contract(b: &dyn Backend) {
    b.create().expect("create on an empty location");
    assert!(b.list(FileType::Snapshot).unwrap().is_empty());

    // config is never overwritten.
    b.write(FileType::Config, "config", b"first").unwrap();
    let e = b.write(FileType::Config, "config", b"second").unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists, "{e}");
    assert_eq!(b.read(FileType::Config, "config").unwrap(), b"first");
    let e = b.create().unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists, "{e}");

    // Content-addressed writes are idempotent.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    b.write(FileType::Index, &name(1), &data).unwrap();
    b.write(FileType::Index, &name(1), &data).unwrap();
    assert_eq!(b.read(FileType::Index, &name(1)).unwrap(), data);

    // Exact ranges; a range past the end is an error, never a short read.
    assert_eq!(
        b.read_range(FileType::Index, &name(1), 1000, 5000).unwrap(),
        &data[1000..6000]
    );
    assert_eq!(
        b.read_range(FileType::Index, &name(1), 99_990, 10).unwrap(),
        &data[99_990..]
    );
    assert!(b.read_range(FileType::Index, &name(1), 99_990, 11).is_err());

    // Prefix listing, in a flat folder and in the fanned-out packs.
    for (t, n) in [
        (
            FileType::Wal,
            format!("000000010000000000000001-{}", name(5)),
        ),
        (
            FileType::Wal,
            format!("000000010000000000000002-{}", name(6)),
        ),
        (FileType::Pack, name(7)),
    ] {
        b.write(t, &n, b"w").unwrap();
    }
    let listed = b
        .list_prefix(FileType::Wal, "000000010000000000000001-")
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].name.ends_with(&name(5)));
    assert_eq!(b.list_prefix(FileType::Wal, "0000000100").unwrap().len(), 2);
    assert_eq!(
        b.list_prefix(FileType::Pack, &name(7)[..6]).unwrap().len(),
        1
    );
    assert!(b.list_prefix(FileType::Wal, "00000002").unwrap().is_empty());
    b.remove(FileType::Pack, &name(7)).unwrap();

    // Missing files.
    let e = b.read(FileType::Snapshot, &name(2)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    let e = b.read_range(FileType::Pack, &name(2), 0, 1).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    b.remove(FileType::Snapshot, &name(2))
        .expect("removing a missing file is fine");

    // Staged writes, listed with sizes; packs fan out but list by name.
    b.write_staged(FileType::Pack, &name(3), &staged(&data))
        .unwrap();
    b.write_staged(FileType::Pack, &name(4), &staged(b"tiny"))
        .unwrap();
    let mut packs = b.list(FileType::Pack).unwrap();
    packs.sort_by(|a, c| a.name.cmp(&c.name));
    let mut want = vec![(name(3), data.len() as u64), (name(4), 4)];
    want.sort();
    assert_eq!(
        packs
            .iter()
            .map(|f| (f.name.clone(), f.size))
            .collect::<Vec<_>>(),
        want
    );
    assert_eq!(b.read(FileType::Pack, &name(4)).unwrap(), b"tiny");
    // A file written from a path stays where it was.
    let kept = staged(b"kept");
    b.write_path(FileType::Index, &name(5), &kept).unwrap();
    assert!(kept.exists(), "write_path must leave its source in place");
    assert_eq!(b.read(FileType::Index, &name(5)).unwrap(), b"kept");
    b.remove(FileType::Index, &name(5)).unwrap();

    // Types do not mix.
    assert_eq!(b.list(FileType::Index).unwrap().len(), 1);
    assert!(b.list(FileType::Key).unwrap().is_empty());

    // Removal.
    b.remove(FileType::Pack, &name(4)).unwrap();
    assert_eq!(b.list(FileType::Pack).unwrap().len(), 1);
    let e = b.read(FileType::Pack, &name(4)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);

    // Concurrent writes of different names.
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                for i in 0..10 {
                    let n = 100 + t * 10 + i;
                    b.write(FileType::Snapshot, &name(n), n.to_string().as_bytes())
                        .unwrap();
                }
            });
        }
    });
    let snaps = b.list(FileType::Snapshot).unwrap();
    assert_eq!(snaps.len(), 80);
    for n in 100..180 {
        assert_eq!(
            b.read(FileType::Snapshot, &name(n)).unwrap(),
            n.to_string().as_bytes()
        );
    }
}

#[test]
fn local_folder_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&LocalBackend::new(dir.path().join("repo")));
}

#[test]
fn s3_keeps_the_contract() {
    let server = S3Server::start();
    let b = S3Backend::open(&server.url("contract/some/prefix"), &server.options()).unwrap();
    contract(&b);
    // The bucket was created by create(); a second repository beside it under another prefix.
    let b2 = S3Backend::open(&server.url("contract/other"), &server.options()).unwrap();
    b2.create().unwrap();
    assert!(b2.list(FileType::Snapshot).unwrap().is_empty());
}

/// The same contract on SeaweedFS, whose conditional PUT is atomic (s3s-fs's is not).
#[test]
fn seaweedfs_keeps_the_contract() {
    let server = Seaweed::start();
    let b = S3Backend::open(&server.url("contract/some/prefix"), &server.options()).unwrap();
    contract(&b);
}

/// Sixteen hosts initialise a repository at one place at once: exactly one `config` write
/// wins, every other is told the place already holds a repository, and the stored config is
/// the winner's bytes. An 8 MiB body keeps each upload in flight long enough to overlap.
fn config_race(b: &S3Backend) {
    b.create().unwrap();
    let bodies: Vec<Vec<u8>> = (0..16u8)
        .map(|i| {
            (0..8u32 << 20)
                .map(|j| (j as u8).wrapping_mul(31) ^ i)
                .collect()
        })
        .collect();
    let barrier = std::sync::Barrier::new(bodies.len());
    let results: Vec<Result<(), sbk::backend::BackendError>> = std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|body| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    b.write(FileType::Config, "config", body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<usize> = (0..results.len()).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one config write wins: {results:?}"
    );
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            assert_eq!(e.kind, ErrorKind::AlreadyExists, "writer {i}: {e}");
        }
    }
    let stored = b.read(FileType::Config, "config").unwrap();
    assert!(
        stored == bodies[winners[0]],
        "the stored config is the winner's"
    );
}

#[test]
fn seaweedfs_lets_exactly_one_config_write_win() {
    let server = Seaweed::start();
    let b = S3Backend::open(&server.url("race"), &server.options()).unwrap();
    config_race(&b);
}

#[test]
fn s3_multipart_upload_of_a_large_file() {
    let server = S3Server::start();
    let mut b = S3Backend::open(&server.url("multi"), &server.options()).unwrap();
    b.create().unwrap();
    // Small parts so that the test stays small: 5 MiB is S3's least part size.
    b.multipart_threshold = 6 << 20;
    b.part_size = 5 << 20;
    let data: Vec<u8> = (0..(13u32 << 20)).map(|i| (i ^ (i >> 9)) as u8).collect();
    b.write_staged(FileType::Pack, &name(9), &staged(&data))
        .unwrap();
    assert_eq!(b.read(FileType::Pack, &name(9)).unwrap(), data);
    assert_eq!(
        b.read_range(FileType::Pack, &name(9), 11 << 20, 100)
            .unwrap(),
        &data[11 << 20..(11 << 20) + 100]
    );
    // Idempotent like any content-addressed write.
    b.write_staged(FileType::Pack, &name(9), &staged(&data))
        .unwrap();
}

#[test]
fn s3_lists_past_one_page() {
    let server = S3Server::start();
    let b = Arc::new(S3Backend::open(&server.url("many"), &server.options()).unwrap());
    b.create().unwrap();
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let b = Arc::clone(&b);
            s.spawn(move || {
                for i in (t..1100).step_by(8) {
                    b.write(FileType::Index, &name(i), b"x").unwrap();
                }
            });
        }
    });
    let listed = b.list(FileType::Index).unwrap();
    assert_eq!(listed.len(), 1100, "S3 returns at most 1000 keys per page");
}

#[test]
fn s3_wrong_credentials_are_a_clear_permanent_error() {
    let server = S3Server::start();
    let mut opts = server.options();
    opts.credentials = Some(sbk::backend::s3::StaticCredentials {
        access_key_id: server.access_key.clone(),
        secret_access_key: "not-the-secret".to_string().into(),
    });
    let b = S3Backend::open(&server.url("creds"), &opts).unwrap();
    let e = b.create().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(
        e.message.contains("creds") && e.message.contains("127.0.0.1"),
        "{e}"
    );
    assert!(!e.message.contains("not-the-secret"), "{e}");
}

#[test]
fn s3_unreachable_endpoint_is_transient() {
    let mut server = S3Server::start();
    let url = server.url("gone");
    let opts = server.options();
    server.stop();
    let b = S3Backend::open(&url, &opts).unwrap();
    let e = b.list(FileType::Snapshot).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("127.0.0.1"), "{e}");
}

/// The wrappers keep the contract too: each over a local folder, the spool both passing
/// through and spooling (a remote that went away), and the stack a remote repository gets
/// (retry over timing over S3).
#[test]
fn every_wrapper_keeps_the_contract() {
    use sbk::backend::retry::RetryBackend;
    use sbk::backend::spool::SpoolBackend;
    use sbk::backend::timed::TimedBackend;
    let dir = tempfile::tempdir().unwrap();
    let local = |n: &str| -> Arc<dyn Backend> { Arc::new(LocalBackend::new(dir.path().join(n))) };
    contract(&RetryBackend::new(local("retry"), Duration::from_secs(5)));
    contract(&TimedBackend::new(local("timed")));
    contract(&SpoolBackend::new(
        local("spool-remote"),
        dir.path().join("spool"),
    ));
    // Spooling (the remote unreachable), the spool takes writes and serves them back; it cannot
    // list the remote, so the full contract is not its to keep. After a sync the remote has
    // every byte.
    let remote = local("spooling-remote");
    remote.create().unwrap();
    let spooling = SpoolBackend::new(Arc::clone(&remote), dir.path().join("spooling"));
    spooling.start_spooling("the test's outage".into());
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 13 % 251) as u8).collect();
    spooling
        .write_staged(FileType::Pack, &name(7), &staged(&data))
        .unwrap();
    spooling.write(FileType::Index, &name(8), b"index").unwrap();
    spooling
        .write(FileType::Snapshot, &name(9), b"snapshot")
        .unwrap();
    assert_eq!(spooling.read(FileType::Pack, &name(7)).unwrap(), data);
    assert_eq!(
        spooling
            .read_range(FileType::Pack, &name(7), 10, 20)
            .unwrap(),
        &data[10..30]
    );
    assert!(remote.list(FileType::Snapshot).unwrap().is_empty());
    let resumed = SpoolBackend::new(Arc::clone(&remote), dir.path().join("spooling"));
    let report = resumed.sync(&Default::default()).unwrap();
    assert_eq!(
        (report.packs, report.index_files, report.snapshots.len()),
        (1, 1, 1)
    );
    assert_eq!(remote.read(FileType::Pack, &name(7)).unwrap(), data);
    assert_eq!(
        remote.read(FileType::Snapshot, &name(9)).unwrap(),
        b"snapshot"
    );
    assert!(resumed.is_empty().unwrap());

    let server = S3Server::start();
    let s3: Arc<dyn Backend> =
        Arc::new(S3Backend::open(&server.url("stacked/prefix"), &server.options()).unwrap());
    let timed: Arc<dyn Backend> = Arc::new(TimedBackend::new(s3));
    contract(&RetryBackend::new(timed, Duration::from_secs(5)));
}

/// A staged file on another file system (here /dev/shm, a tmpfs, when the repository is on
/// disk) cannot be renamed into place: the local backend copies it through its own `tmp/`,
/// durably, and the staged file is gone afterwards as after a rename.
#[test]
fn local_staged_write_from_another_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::new(dir.path().join("repo"));
    b.create().unwrap();
    let shm = std::path::Path::new("/dev/shm");
    let mut f = match shm.is_dir() {
        true => tempfile::NamedTempFile::new_in(shm).unwrap(),
        false => tempfile::NamedTempFile::new().unwrap(),
    };
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 11 % 251) as u8).collect();
    f.write_all(&data).unwrap();
    let staged = f.into_temp_path();
    b.write_staged(FileType::Pack, &name(5), &staged).unwrap();
    assert!(!staged.exists(), "the staged file is consumed");
    assert_eq!(b.read(FileType::Pack, &name(5)).unwrap(), data);
    let tmp = std::fs::read_dir(dir.path().join("repo/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "nothing left in the repository's tmp/");
}
