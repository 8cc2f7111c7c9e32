//! Builds, fast, a repository that looks like years of `sbk snapshot postgres` of one database
//! taken every six hours, for `benches/scale.sh` (the build is not what is timed):
//!
//! `scale_build REPO BLOBS SNAPSHOTS [LIVE_CHUNKS] [CHUNK_BYTES]`, password from `SBK_PASSWORD`.
//!
//! The database is `LIVE_CHUNKS` chunks (default 2,000). The first snapshot stores them all as
//! full blobs, 16 to a pack (as 1 MiB chunks fill 16 MiB packs). Each later snapshot changes the
//! same number of chunks at random positions (so that the repository ends with about `BLOBS`
//! blobs, trees included); a changed chunk is stored as a delta against its position's last
//! keyframe, and every 64th change of a position as a full blob again (a new keyframe), as the
//! archiver's generation cap does. Like a real run, each snapshot writes one pack (its new
//! blobs and its tree), one index file and one snapshot file; its tree lists every chunk with
//! its generation and sketch, as trees with deltas do. Every blob is real (sealed, checkable,
//! restorable): only the chunks are small (`CHUNK_BYTES`, default 512) so that the repository
//! fits on a disk, which makes packs and `--read-data` far smaller than a real repository's.
//!
//! Written through sbk's own library (`Repository`, `PackWriter`, `save_index`,
//! `save_snapshot`), not through the archiver: the archiver chunks a stream, and a stream with
//! chosen chunk boundaries cannot be made without real-sized chunks.
//! Prints the ID of the last snapshot.

use std::time::Instant;

use chrono::{Duration, TimeZone};
use sbk::backend::Storage;
use sbk::crypto::{blob_aad, seal_in_place, KdfParams, NONCE_LEN, TAG_LEN};
use sbk::format::{delta, payload};
use sbk::repository::{
    BlobKind, FileNode, IndexFile, IndexPack, Snapshot, Source, Summary, Tree, SNAPSHOT_VERSION,
};
use sbk::similarity::ChunkMeta;
use sbk::{Actor, Id, Repository};

const GENERATION_CAP: u32 = 64;
const FIRST_SNAPSHOT_BLOBS_PER_PACK: usize = 16;

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The plaintext of chunk `pos` at version `v`: random bytes of the position, with a few bytes
/// of the version written in (a scattered row change).
fn chunk(pos: u64, v: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut s = mix(pos ^ 0x5ca1e);
    while out.len() < len {
        s = mix(s);
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    if v > 0 {
        for k in 0..4u64 {
            let h = mix(pos.wrapping_mul(1_000_003) ^ (u64::from(v) << 20) ^ k);
            let at = (h as usize) % (len - 8);
            out[at..at + 8].copy_from_slice(&(h ^ u64::from(v)).to_le_bytes());
        }
        out[..4].copy_from_slice(&v.to_le_bytes());
    }
    out
}

fn sketch(pos: u64, v: u32) -> [u32; 8] {
    std::array::from_fn(|i| mix(pos ^ (u64::from(v) << 32) ^ (i as u64) << 56) as u32)
}

struct Position {
    version: u32,
    /// Version and blob of the last keyframe.
    key_version: u32,
    key_id: Id,
    id: Id,
}

fn main() -> sbk::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: scale_build REPO BLOBS SNAPSHOTS [LIVE_CHUNKS] [CHUNK_BYTES]");
        std::process::exit(2);
    }
    let dir = &args[1];
    let blobs: u64 = args[2].parse().expect("BLOBS");
    let snapshots: u64 = args[3].parse().expect("SNAPSHOTS");
    let live: u64 = args
        .get(4)
        .map_or(2_000, |s| s.parse().expect("LIVE_CHUNKS"));
    let len: usize = args.get(5).map_or(512, |s| s.parse().expect("CHUNK_BYTES"));
    assert!(snapshots >= 2 && len >= 64);
    let per_snapshot = (blobs.saturating_sub(live + snapshots) / (snapshots - 1)).min(live);
    let password = std::env::var("SBK_PASSWORD").expect("SBK_PASSWORD");
    let repo = Repository::init(
        Storage::local(dir),
        password.as_bytes(),
        KdfParams::new_random(),
        &Actor::current(),
    )?;
    let level = repo.config().compression.level;
    let key = repo.key().clone();
    let seal_full = |id: &Id, data: &[u8]| -> Vec<u8> {
        let mut buf = vec![0u8; NONCE_LEN];
        buf.extend_from_slice(&payload::encode(data, level));
        seal_in_place(
            &key.encrypt,
            &blob_aad(BlobKind::Data as u8, id, None),
            &mut buf,
        );
        buf
    };
    let seal_delta = |id: &Id, base_id: &Id, base: &[u8], data: &[u8]| -> Vec<u8> {
        let mut buf = delta::encode(base, data, 1, NONCE_LEN, TAG_LEN).expect("delta");
        seal_in_place(
            &key.encrypt,
            &blob_aad(BlobKind::Delta as u8, id, Some(base_id)),
            &mut buf,
        );
        buf
    };
    let store = repo.pack_store();
    let clock = Instant::now();
    // Six hours apart, the last one now-ish.
    let end = chrono::Local::now().fixed_offset();
    let start = end - Duration::hours(6 * (snapshots as i64 - 1));
    let start = chrono::FixedOffset::east_opt(0)
        .expect("UTC")
        .timestamp_opt(start.timestamp(), 0)
        .single()
        .expect("time");
    let mut rng = 0x1234_5678u64;
    let mut plain: Vec<Vec<u8>> = (0..live).map(|p| chunk(p, 0, len)).collect();
    let mut pos: Vec<Position> = Vec::with_capacity(live as usize);
    let mut total_blobs = 0u64;
    let mut last = Id([0; 32]);
    let mut last_tree = Id([0; 32]);
    for s in 0..snapshots {
        let mut packs: Vec<IndexPack> = Vec::new();
        let mut pack = repo.start_pack()?;
        let mut in_pack = 0usize;
        let mut new_blobs = 0u64;
        let mut bytes_added = 0u64;
        let mut add = |pack: &mut sbk::repository::packer::PackWriter,
                       kind: BlobKind,
                       id: Id,
                       sealed: &[u8],
                       raw: usize,
                       base: Option<Id>|
         -> sbk::Result<()> {
            pack.add(kind, id, raw as u32, sealed, base)
                .map_err(|e| repo.staging_error(e))?;
            new_blobs += 1;
            bytes_added += sealed.len() as u64;
            Ok(())
        };
        if s == 0 {
            for p in 0..live {
                let id = key.blob_id(&plain[p as usize]);
                let sealed = seal_full(&id, &plain[p as usize]);
                add(&mut pack, BlobKind::Data, id, &sealed, len, None)?;
                pos.push(Position {
                    version: 0,
                    key_version: 0,
                    key_id: id,
                    id,
                });
                in_pack += 1;
                if in_pack == FIRST_SNAPSHOT_BLOBS_PER_PACK {
                    let done = std::mem::replace(&mut pack, repo.start_pack()?);
                    let f = done.finish(&key).map_err(|e| repo.staging_error(e))?;
                    packs.push(store.store(f)?);
                    in_pack = 0;
                }
            }
        } else {
            let mut chosen = std::collections::BTreeSet::new();
            while (chosen.len() as u64) < per_snapshot {
                rng = mix(rng);
                chosen.insert(rng % live);
            }
            for p in chosen {
                let at = &mut pos[p as usize];
                at.version += 1;
                let data = chunk(p, at.version, len);
                let id = key.blob_id(&data);
                if at.version - at.key_version >= GENERATION_CAP {
                    let sealed = seal_full(&id, &data);
                    add(&mut pack, BlobKind::Data, id, &sealed, len, None)?;
                    at.key_version = at.version;
                    at.key_id = id;
                } else {
                    let base = chunk(p, at.key_version, len);
                    let sealed = seal_delta(&id, &at.key_id, &base, &data);
                    add(
                        &mut pack,
                        BlobKind::Delta,
                        id,
                        &sealed,
                        len,
                        Some(at.key_id),
                    )?;
                }
                at.id = id;
                plain[p as usize] = data;
            }
        }
        let mut hasher = key.hasher();
        for c in &plain {
            hasher.update(c);
        }
        let node = FileNode {
            name: "app.pgdump".into(),
            size: live * len as u64,
            hash: Id(*hasher.finalize().as_bytes()),
            content: pos.iter().map(|p| p.id).collect(),
            chunks: pos
                .iter()
                .enumerate()
                .map(|(i, p)| ChunkMeta(p.version - p.key_version, sketch(i as u64, p.version)))
                .collect(),
            attrs: None,
        };
        let tree = serde_json::to_vec(&Tree::new(vec![node], Vec::new())).expect("tree");
        let tree_id = key.blob_id(&tree);
        let mut buf = vec![0u8; NONCE_LEN];
        buf.extend_from_slice(&payload::encode(&tree, level));
        seal_in_place(
            &key.encrypt,
            &blob_aad(BlobKind::Tree as u8, &tree_id, None),
            &mut buf,
        );
        if tree_id != last_tree {
            add(&mut pack, BlobKind::Tree, tree_id, &buf, tree.len(), None)?;
        }
        last_tree = tree_id;
        if !pack.is_empty() {
            let f = pack.finish(&key).map_err(|e| repo.staging_error(e))?;
            packs.push(store.store(f)?);
        }
        let packs_new = packs.len() as u64;
        if !packs.is_empty() {
            repo.save_index(&IndexFile {
                packs,
                ..Default::default()
            })?;
        }
        total_blobs += new_blobs;
        let time = start + Duration::hours(6 * s as i64);
        let mut details = serde_json::Map::new();
        details.insert("databases".into(), serde_json::json!(["app"]));
        details.insert("server".into(), serde_json::json!("PostgreSQL 16.4"));
        details.insert("host".into(), serde_json::json!("db.internal"));
        details.insert("port".into(), serde_json::json!(5432));
        last = repo.save_snapshot(&Snapshot {
            version: SNAPSHOT_VERSION,
            time,
            host: "backup-host".into(),
            username: "postgres".into(),
            tags: vec!["scheduled".into()],
            source: Source {
                kind: "postgres".into(),
                details,
            },
            tree: tree_id,
            parent: (s > 0).then_some(last),
            summary: Summary {
                bytes_in: live * len as u64,
                bytes_added,
                bytes_added_raw: new_blobs * len as u64,
                blobs_total: live + 1,
                blobs_new: new_blobs,
                packs_new,
                started: time,
                finished: time + Duration::seconds(60),
                duration_secs: 60.0,
                ..Default::default()
            },
        })?;
        if (s + 1) % 1000 == 0 {
            eprintln!(
                "{} snapshots, {total_blobs} blobs, {:.0} s",
                s + 1,
                clock.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "built {snapshots} snapshots, {total_blobs} blobs ({per_snapshot} changed chunks of {live} \
         per snapshot) in {:.0} s",
        clock.elapsed().as_secs_f64()
    );
    println!("{last}");
    Ok(())
}
