//! The test vectors of `docs/format.md`, checked against the code. Each ```vector block in the
//! document is parsed and recomputed here, so the specification and the implementation cannot
//! drift apart. Run `cargo test --test format_vectors -- --ignored --nocapture print` to print
//! freshly computed vectors.

use std::collections::BTreeMap;

use sbk::chunker::{Chunker, ChunkerParams};
use sbk::crypto::{blob_aad, seal_with_nonce, KdfParams, MasterKey};
use sbk::format::index::{DeletedPack, IndexFile, IndexPack, MarkedPack};
use sbk::format::pack::{encode_header, PackEntry};
use sbk::format::tree::{DirNode, FileNode, Tree};
use sbk::format::{config, payload, BlobKind};
use sbk::Id;

fn seq(start: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| start.wrapping_add(i as u8)).collect()
}

fn key() -> [u8; 32] {
    seq(0, 32).try_into().unwrap()
}

fn nonce() -> [u8; 24] {
    seq(0x40, 24).try_into().unwrap()
}

/// The chunker test input: the first `n` bytes of BLAKE3's extendable output for a fixed string.
fn xof(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    blake3::Hasher::new()
        .update(b"sbk chunker vector")
        .finalize_xof()
        .fill(&mut out);
    out
}

fn chunk_lengths(p: ChunkerParams, data: &[u8]) -> String {
    Chunker::new(data, p)
        .map(|c| c.unwrap().len().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn small_params(seed: u64) -> ChunkerParams {
    ChunkerParams {
        min_size: 16384,
        avg_size: 65536,
        max_size: 262144,
        ..ChunkerParams::default_with_seed(seed)
    }
}

fn entries() -> Vec<PackEntry> {
    vec![
        PackEntry {
            kind: BlobKind::Data,
            id: Id([0x11; 32]),
            offset: 0,
            stored_len: 100,
            raw_len: 1000,
            base: None,
        },
        PackEntry {
            kind: BlobKind::Tree,
            id: Id([0x22; 32]),
            offset: 100,
            stored_len: 50,
            raw_len: 60,
            base: None,
        },
    ]
}

/// Every vector, computed by the code.
fn computed() -> BTreeMap<&'static str, String> {
    let mut v = BTreeMap::new();
    v.insert("file-id", Id::of_file_bytes(b"sbk").to_hex());
    let mk = MasterKey {
        encrypt: key(),
        id_key: key(),
    };
    v.insert("blob-id", mk.blob_id(b"hello").to_hex());
    v.insert(
        "seal",
        hex::encode(seal_with_nonce(&key(), nonce(), b"sbk:index", b"hello")),
    );
    let blob_id = mk.blob_id(b"hello");
    let plain = payload::encode(b"hello", 3);
    v.insert("blob-payload", hex::encode(&plain));
    v.insert(
        "sealed-blob",
        hex::encode(seal_with_nonce(
            &key(),
            nonce(),
            &blob_aad(BlobKind::Data as u8, &blob_id, None),
            &plain,
        )),
    );
    let kdf = KdfParams {
        algorithm: "argon2id".into(),
        version: 0x13,
        m_cost: 1024,
        t_cost: 1,
        p_cost: 1,
        salt: b"saltsaltsaltsalt".to_vec(),
    };
    v.insert("argon2id", hex::encode(kdf.derive(b"password").unwrap()));
    let key_file = sbk::format::key::KeyFile {
        version: 2,
        role: "full".into(),
        created: chrono::DateTime::parse_from_rfc3339("2026-12-04T02:00:00.5+01:00").unwrap(),
        host: "db1".into(),
        username: "postgres".into(),
        kdf: kdf.clone(),
        master_key: Vec::new(),
    };
    v.insert(
        "key-v2-aad",
        String::from_utf8(key_file.aad())
            .unwrap()
            .replace('\0', "\\0"),
    );
    v.insert("config-header", hex::encode(config::join(1, b"")));
    let mut removed = sbk::format::audit::Changes::default();
    removed.snapshots.insert(Id([0x11; 32]));
    let record = sbk::format::audit::AuditRecord {
        version: 1,
        time: chrono::DateTime::parse_from_rfc3339("2026-12-05T05:00:00+01:00").unwrap(),
        host: "db1".into(),
        user: "postgres".into(),
        sbk: "0.1.0".into(),
        verb: "forget".into(),
        args: ["forget", "postgresql://app:hunter2@db/app"]
            .iter()
            .map(|a| sbk::format::audit::redact(a))
            .collect(),
        outcome: "ok".into(),
        run: Some("0123456789abcdef".into()),
        added: Default::default(),
        removed,
    };
    let json = serde_json::to_string(&record).unwrap();
    assert_eq!(
        serde_json::from_str::<sbk::format::audit::AuditRecord>(&json).unwrap(),
        record
    );
    v.insert("audit-record", json);
    v.insert("pack-header", hex::encode(encode_header(&entries())));
    let index = IndexFile {
        supersedes: vec![Id([0x33; 32])],
        packs: vec![IndexPack {
            id: Id([0x44; 32]),
            blobs: entries(),
        }],
        ..Default::default()
    };
    v.insert("index", hex::encode(index.encode()));
    let marked = IndexFile {
        marked: vec![MarkedPack {
            marked_at: 1_796_000_000,
            pack: IndexPack {
                id: Id([0x55; 32]),
                blobs: entries()[..1].to_vec(),
            },
        }],
        deleted: vec![DeletedPack {
            id: Id([0x66; 32]),
            deleted_at: 1_796_000_100,
        }],
        ..Default::default()
    };
    v.insert("index-marked", hex::encode(marked.encode()));
    let mut attrs = serde_json::Map::new();
    attrs.insert("content_type".into(), "image/png".into());
    attrs.insert("etag".into(), "\"9e107d9d372bb6826bd81d3542a419d6\"".into());
    let tree = Tree::new(
        vec![FileNode {
            name: "a.png".into(),
            size: 3,
            hash: Id([0x77; 32]),
            content: vec![Id([0x11; 32])],
            chunks: vec![],
            attrs: Some(attrs),
        }],
        vec![DirNode {
            name: "b".into(),
            trees: vec![Id([0x22; 32]), Id([0x33; 32])],
        }],
    );
    v.insert("tree-v2", serde_json::to_string(&tree).unwrap());
    let (dirs, name) = sbk::supabase::names::key_to_path("photos//a/./100%.png");
    v.insert("object-key-path", format!("{} / {name}", dirs.join(" / ")));
    let data = xof(2 << 20);
    v.insert("fastcdc-small-seed0", chunk_lengths(small_params(0), &data));
    v.insert(
        "fastcdc-small-seed1234",
        chunk_lengths(small_params(1234), &data),
    );
    v.insert(
        "fastcdc-default-seed0",
        chunk_lengths(ChunkerParams::default_with_seed(0), &xof(16 << 20)),
    );
    v
}

/// The ```vector blocks of docs/format.md: `name: value` lines, values may wrap.
fn documented() -> BTreeMap<String, String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/format.md")).unwrap();
    let mut out = BTreeMap::new();
    let mut in_block = false;
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if line.trim() == "```vector" {
            in_block = true;
            continue;
        }
        if in_block && line.trim() == "```" {
            in_block = false;
            current = None;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some((k, val)) = line
            .split_once(':')
            .filter(|(k, _)| !k.starts_with(' ') && !k.contains(' '))
        {
            out.insert(k.to_string(), val.trim().to_string());
            current = Some(k.to_string());
        } else if let Some(k) = &current {
            let e = out.get_mut(k).unwrap();
            // Lists of numbers wrap at spaces; hex strings wrap anywhere.
            if e.contains(' ') {
                e.push(' ');
            }
            e.push_str(line.trim());
        }
    }
    out
}

#[test]
fn documented_vectors_match_the_code() {
    let doc = documented();
    let code = computed();
    for (name, value) in &code {
        let documented = doc
            .get(*name)
            .unwrap_or_else(|| panic!("docs/format.md has no vector {name}"));
        assert_eq!(documented, value, "vector {name} differs from the code");
    }
}

#[test]
fn documented_payload_decodes() {
    // A zstd payload made by libzstd 1.5: decoding is stable across versions.
    let doc = documented();
    let enc = hex::decode(&doc["zstd-payload"]).unwrap();
    assert_eq!(payload::decode(&enc, 1 << 20).unwrap(), vec![b'a'; 100]);
}

#[test]
#[ignore]
fn print() {
    for (k, v) in computed() {
        println!("{k}: {v}");
    }
    println!(
        "zstd-payload: {}",
        hex::encode(payload::encode(&[b'a'; 100], 3))
    );
}

#[test]
fn documented_delta_decodes() {
    let doc = documented();
    let base = doc["delta-base"].as_bytes();
    let payload = hex::decode(&doc["delta-payload"]).unwrap();
    let out = sbk::format::delta::decode(base, &payload, doc["delta-result"].len()).unwrap();
    assert_eq!(out, doc["delta-result"].as_bytes());
}

#[test]
#[ignore]
fn print_delta() {
    let base = b"the quick brown fox jumps over the lazy dog; the quick brown fox";
    let data = b"the quick brown cat jumps over the lazy dog; the quick brown fox!";
    let d = sbk::format::delta::encode(base, data, 1, 0, 0).unwrap();
    println!("delta-payload: {}", hex::encode(d));
}
