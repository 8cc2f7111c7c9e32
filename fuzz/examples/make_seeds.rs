//! Writes the seed inputs in `fuzz/seeds/<target>/`: valid objects made with sbk's own encoders,
//! so that even a short run starts past the decoders' first checks. Run from `fuzz/`:
//! `cargo run --example make_seeds` (a plain build: no instrumentation, no libFuzzer).

use std::fs;
use std::path::Path;

use sbk::chunker::ChunkerParams;
use sbk::crypto::{aad, seal_with_nonce, KdfParams};
use sbk::format::config::{self, Compression, Config};
use sbk::format::index::{IndexFile, IndexPack};
use sbk::format::key::KeyFile;
use sbk::format::pack::{encode_header, PackEntry};
use sbk::format::snapshot::{Snapshot, Source, Summary};
use sbk::format::tree::{FileNode, Tree};
use sbk::format::{payload, BlobKind};
use sbk::Id;

/// The key of the `sealed` target.
const KEY: [u8; 32] = [0x42; 32];

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("seeds").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn pseudo_random(n: usize, mut s: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn entries() -> Vec<PackEntry> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (i, (kind, len)) in [(BlobKind::Data, 100), (BlobKind::Tree, 57), (BlobKind::Delta, 40)]
        .into_iter()
        .enumerate()
    {
        out.push(PackEntry {
            kind,
            id: Id([0x11 * (i as u8 + 1); 32]),
            offset,
            stored_len: len,
            raw_len: len * 3,
            base: (kind == BlobKind::Delta).then_some(Id([0xbb; 32])),
        });
        offset += len;
    }
    out
}

fn time(s: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap()
}

fn main() {
    // pack_header: `data_len || header plaintext`, and whole packs with a clear header.
    let e = entries();
    let data_len: u32 = e.iter().map(|e| e.stored_len).sum();
    for n in 0..=e.len() {
        let len: u64 = e[..n].iter().map(|e| e.stored_len as u64).sum();
        let mut seed = len.to_le_bytes().to_vec();
        seed.extend_from_slice(&encode_header(&e[..n]));
        write("pack_header", &format!("header-{n}"), &seed);
    }
    let header = encode_header(&e);
    let mut pack = pseudo_random(data_len as usize, 1);
    pack.extend_from_slice(&header);
    pack.extend_from_slice(&(header.len() as u32).to_le_bytes());
    write("pack_header", "pack", &pack);

    // index
    let index = IndexFile {
        supersedes: vec![Id([0x55; 32])],
        packs: vec![
            IndexPack {
                id: Id([0x66; 32]),
                blobs: e.clone(),
            },
            IndexPack {
                id: Id([0x77; 32]),
                blobs: vec![],
            },
        ],
        ..Default::default()
    };
    write("index", "two-packs", &index.encode());
    write("index", "empty", &IndexFile::default().encode());

    // payload: `limit (u16) || payload`, raw and zstd.
    let text = b"hello hello hello hello hello hello hello hello sbk".repeat(20);
    for (name, data) in [
        ("zstd", text.clone()),
        ("raw", pseudo_random(300, 2)),
        ("empty", vec![]),
    ] {
        let mut seed = (data.len() as u16).to_le_bytes().to_vec();
        seed.extend_from_slice(&payload::encode(&data, 3));
        write("payload", name, &seed);
    }

    // config: the clear header and a sealed payload.
    let params = ChunkerParams::default_with_seed(1234567890);
    let cfg = Config {
        version: 1,
        id: Id([0x12; 32]),
        created: time("2026-11-29T05:33:41.123+00:00"),
        chunker: params,
        compression: Compression {
            algorithm: "zstd".into(),
            level: 3,
        },
        pack_size: 16 << 20,
    };
    let cfg_json = serde_json::to_vec(&cfg).unwrap();
    let sealed = seal_with_nonce(&KEY, [7; 24], aad::CONFIG, &payload::encode(&cfg_json, 3));
    write("config", "config", &config::join(config::FORMAT_VERSION, &sealed));

    // json_files
    write("json_files", "config.json", &cfg_json);
    let key = KeyFile {
        version: 1,
        role: "full".into(),
        created: time("2026-11-29T05:33:41.123+00:00"),
        host: "db1".into(),
        username: "postgres".into(),
        kdf: KdfParams {
            salt: vec![9; 16],
            ..KdfParams::with_cost(65536, 3, 1)
        },
        master_key: seal_with_nonce(&KEY, [8; 24], aad::MASTER_KEY, b"{}"),
    };
    write("json_files", "key.json", &serde_json::to_vec_pretty(&key).unwrap());
    let mut details = serde_json::Map::new();
    details.insert("command".into(), serde_json::json!(["pg_dump", "app"]));
    let snap = Snapshot {
        version: 1,
        time: time("2026-11-29T02:00:00+01:00"),
        host: "db1".into(),
        username: "postgres".into(),
        tags: vec!["daily".into()],
        source: Source {
            kind: "command".into(),
            details,
        },
        tree: Id([0x33; 32]),
        parent: Some(Id([0x44; 32])),
        summary: Summary {
            bytes_in: 1048576,
            bytes_added: 5120,
            bytes_added_raw: 9000,
            blobs_total: 3,
            blobs_new: 1,
            packs_new: 1,
            started: time("2026-11-29T02:00:00+01:00"),
            finished: time("2026-11-29T02:00:01+01:00"),
            duration_secs: 0.42,
        },
    };
    write("json_files", "snapshot.json", &serde_json::to_vec(&snap).unwrap());
    let tree = Tree {
        version: 1,
        files: vec![
            FileNode {
                name: "app.pgdump".into(),
                size: 1048576,
                hash: Id([0x21; 32]),
                content: vec![Id([0x22; 32]), Id([0x23; 32])],
            },
            FileNode {
                name: "globals.sql".into(),
                size: 0,
                hash: Id([0x24; 32]),
                content: vec![],
            },
        ],
    };
    write("json_files", "tree.json", &serde_json::to_vec(&tree).unwrap());

    // sealed: `label selector || sealed`, one per label of the target's list.
    let labels: [&[u8]; 7] = [
        aad::CONFIG,
        aad::MASTER_KEY,
        aad::INDEX,
        aad::SNAPSHOT,
        aad::PACK_HEADER,
        aad::BLOB,
        b"",
    ];
    for (i, label) in labels.iter().enumerate() {
        let plain = format!("sealed seed {i}").into_bytes();
        let mut seed = vec![i as u8];
        seed.extend_from_slice(&seal_with_nonce(&KEY, [i as u8; 24], label, &plain));
        write("sealed", &format!("label-{i}"), &seed);
    }

    // chunker: `read size - 1 || stream`.
    let mut seed = vec![99];
    seed.extend_from_slice(&pseudo_random(5000, 3));
    write("chunker", "random", &seed);
    let mut seed = vec![0];
    seed.extend_from_slice(&text);
    write("chunker", "text", &seed);
}
