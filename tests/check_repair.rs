//! `check` finds and names every kind of damage, with the snapshots it affects; `repair index`
//! and `repair packs` then leave a repository that `check` passes, reporting what was lost.

mod common;

use std::path::{Path, PathBuf};

use common::*;

struct Snap {
    id: String,
    data: Vec<u8>,
    packs: Vec<PathBuf>,
}

/// Three snapshots of unrelated data, each in its own pack(s).
fn three_snapshots() -> (TestRepo, Vec<Snap>) {
    let repo = TestRepo::new();
    let mut out = Vec::new();
    for seed in 0..3 {
        let before = repo.files("data");
        let data = dump_like(60 + seed, 3 << 20);
        let v = repo.snapshot(&format!("f{seed}.dump"), &data);
        let packs = repo
            .files("data")
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        out.push(Snap {
            id: v["id"].as_str().unwrap().to_string(),
            data,
            packs,
        });
    }
    (repo, out)
}

fn check(repo: &TestRepo, args: &[&str]) -> (bool, serde_json::Value) {
    let mut a = vec!["--json", "check"];
    a.extend_from_slice(args);
    let out = repo.run(&a);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    assert!(!stderr(&out).contains("panicked"));
    assert_eq!(out.status.success(), v["ok"] == true, "{v:#}");
    (out.status.success(), v)
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Damage reported: exactly these packs and exactly these snapshots.
fn assert_damage(v: &serde_json::Value, packs: &[String], snapshots: &[&str]) {
    let mut want: Vec<String> = snapshots.iter().map(|s| s.to_string()).collect();
    want.sort();
    let mut got = ids(&v["damaged_snapshots"]);
    got.sort();
    assert_eq!(got, want, "{v:#}");
    let got = ids(&v["damaged_packs"]);
    for p in packs {
        assert!(got.contains(p), "pack {p} not named: {v:#}");
    }
}

fn assert_whole(repo: &TestRepo, snaps: &[&Snap]) {
    for s in snaps {
        assert!(repo.dump(&s.id) == s.data, "snapshot {} damaged", s.id);
    }
}

#[test]
fn a_flipped_byte_is_found_by_read_data_and_repair_salvages_the_rest() {
    let (repo, s) = three_snapshots();
    assert!(check(&repo, &["--read-data"]).0);
    let pack = &s[1].packs[0];
    let mut b = std::fs::read(pack).unwrap();
    b[1000] ^= 0x01; // inside the first blob
    std::fs::write(pack, b).unwrap();

    let (ok, v) = check(&repo, &["--read-data"]);
    assert!(!ok);
    assert_damage(&v, &[name(pack)], &[&s[1].id]);
    assert!(
        v["errors"].to_string().contains("authentication failed"),
        "{v:#}"
    );
    // The human form names the pack and the snapshot on stderr, exit 1.
    let out = repo.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&name(pack)) && err.contains(&s[1].id[..8]),
        "{err}"
    );

    // Repair: the intact blobs are salvaged, the pack quarantined, the snapshot named.
    let out = repo.run(&["--json", "repair", "packs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&r["quarantined"]), vec![name(pack)]);
    assert!(r["blobs_salvaged"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["blobs_lost"].as_u64().unwrap() >= 1, "{r:#}");
    assert_eq!(ids(&r["damaged_snapshots"]), vec![s[1].id.clone()]);
    assert!(repo.path.join("quarantine").join(name(pack)).exists());
    assert!(!pack.exists());
    // The lost snapshot is still listed until forgotten; check says so.
    let (ok, v) = check(&repo, &[]);
    assert!(!ok);
    assert_damage(&v, &[], &[&s[1].id]);
    let out = repo.run(&["repair", "packs", "--forget-damaged"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(check(&repo, &["--read-data"]).0);
    assert_whole(&repo, &[&s[0], &s[2]]);
    assert_eq!(repo.snapshots().len(), 2);
}

#[test]
fn a_truncated_pack_is_found_without_reading_data() {
    let (repo, s) = three_snapshots();
    let pack = &s[0].packs[0];
    let b = std::fs::read(pack).unwrap();
    std::fs::write(pack, &b[..b.len() / 2]).unwrap();
    let (ok, v) = check(&repo, &[]);
    assert!(!ok);
    assert_damage(&v, &[name(pack)], &[&s[0].id]);
    // Rebuilding the index keeps what earlier index files said of it: still named, not dropped.
    let out = repo.run(&["--json", "repair", "index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["unreadable"][0]["id"], name(pack).as_str());
    let (ok, v) = check(&repo, &[]);
    assert!(!ok);
    assert_damage(&v, &[name(pack)], &[&s[0].id]);
    // Repair moves it aside (a truncated pack may still hold whole blobs: salvaged).
    let out = repo.run(&["repair", "packs", "--forget-damaged"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(check(&repo, &["--read-data"]).0);
    assert_whole(&repo, &[&s[1], &s[2]]);
}

#[test]
fn a_deleted_pack_is_named_with_its_snapshot() {
    let (repo, s) = three_snapshots();
    let pack = &s[2].packs[0];
    std::fs::remove_file(pack).unwrap();
    let (ok, v) = check(&repo, &[]);
    assert!(!ok);
    assert_damage(&v, &[name(pack)], &[&s[2].id]);
    assert!(
        v["errors"].to_string().contains("does not hold it"),
        "{v:#}"
    );
    // Prune refuses to run on it.
    let out = repo.run(&["prune"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("run `sbk check`"), "{}", stderr(&out));
    let out = repo.run(&[
        "--json",
        "repair",
        "packs",
        &name(pack)[..12],
        "--forget-damaged",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&r["forgotten"]), vec![s[2].id.clone()]);
    assert!(check(&repo, &["--read-data"]).0);
    assert_whole(&repo, &[&s[0], &s[1]]);
}

#[test]
fn a_deleted_index_file_is_found_and_repair_index_restores_everything() {
    let (repo, s) = three_snapshots();
    let index_files = repo.files("index");
    assert_eq!(index_files.len(), 3);
    // Two of the three snapshots lose their index file.
    for f in &index_files[1..] {
        std::fs::remove_file(f).unwrap();
    }
    let (ok, v) = check(&repo, &[]);
    assert!(!ok);
    assert!(v["errors"].to_string().contains("no index lists"), "{v:#}");
    assert_eq!(v["damaged_snapshots"].as_array().unwrap().len(), 2, "{v:#}");
    assert!(v["notes"].to_string().contains("in no index"), "{v:#}");
    let before = repo.files("index");
    let out = repo.run(&["--json", "repair", "index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["packs_indexed"], r["packs"]);
    assert!(check(&repo, &["--read-data"]).0);
    assert_whole(&repo, &[&s[0], &s[1], &s[2]]);
    // A damaged index file is superseded too.
    let new_files: Vec<PathBuf> = repo
        .files("index")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let f = &new_files[0];
    let mut b = std::fs::read(f).unwrap();
    b[50] ^= 0x10;
    std::fs::write(f, b).unwrap();
    let (ok, v) = check(&repo, &[]);
    assert!(!ok);
    assert!(v["errors"][0]["kind"] == "index", "{v:#}");
    assert!(repo.run(&["repair", "index"]).status.success());
    assert!(check(&repo, &["--read-data"]).0);
    assert_whole(&repo, &[&s[0], &s[1], &s[2]]);
}

#[test]
fn a_damaged_snapshot_file_is_named() {
    let (repo, s) = three_snapshots();
    let f = repo
        .files("snapshots")
        .into_iter()
        .find(|p| name(p) == s[0].id)
        .unwrap();
    let mut b = std::fs::read(&f).unwrap();
    b[30] ^= 0x02;
    std::fs::write(&f, b).unwrap();
    let (ok, v) = check(&repo, &[]);
    assert!(!ok);
    assert_damage(&v, &[], &[&s[0].id]);
    assert!(
        v["errors"].to_string().contains("do not match its name"),
        "{v:#}"
    );
    let out = repo.run(&["repair", "packs", "--forget-damaged"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(check(&repo, &["--read-data"]).0);
    assert_whole(&repo, &[&s[1], &s[2]]);
}

#[test]
fn read_data_subsets_cover_every_pack_once() {
    let (repo, _) = three_snapshots();
    let packs = repo.files("data").len() as u64;
    let mut read = 0;
    for n in 1..=3 {
        let (ok, v) = check(&repo, &["--read-data-subset", &format!("{n}/3")]);
        assert!(ok);
        read += v["packs_read"].as_u64().unwrap();
    }
    assert_eq!(read, packs);
    let (ok, v) = check(&repo, &["--read-data-subset", "100%"]);
    assert!(ok);
    assert_eq!(v["packs_read"].as_u64().unwrap(), packs);
    let out = repo.run(&["check", "--read-data-subset", "4/3"]);
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn damage_in_a_delta_or_its_base_names_every_snapshot_that_needs_it() {
    let repo = TestRepo::new();
    let first = dump_like(70, 3 << 20);
    let a = repo.snapshot("db.dump", &first);
    let base_packs = repo.files("data");
    let second = drift(&first, 1);
    let b = repo.snapshot("db.dump", &second);
    assert!(u64_of(&b, &["summary", "blobs_delta"]) > 0);
    let delta_pack = repo
        .files("data")
        .into_iter()
        .find(|p| !base_packs.contains(p))
        .unwrap();
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    assert!(check(&repo, &["--read-data"]).0);

    // A flipped byte in the delta pack: only the second snapshot.
    let orig = std::fs::read(&delta_pack).unwrap();
    let mut bad = orig.clone();
    bad[100] ^= 0x08;
    std::fs::write(&delta_pack, &bad).unwrap();
    let (ok, v) = check(&repo, &["--read-data"]);
    assert!(!ok);
    assert_damage(&v, &[name(&delta_pack)], &[b]);
    std::fs::write(&delta_pack, &orig).unwrap();
    assert!(check(&repo, &["--read-data"]).0);

    // A flipped byte in a blob that one of the deltas names as its base: both snapshots need
    // it. (Not just any blob of the first snapshot: the second one, chunked differently, may
    // leave one of them unused as a base.)
    let entries = |pack: &Path| -> Vec<serde_json::Value> {
        let out = repo.run(&["cat", "pack", &name(pack)]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["blobs"].as_array().unwrap().clone()
    };
    let bases: Vec<serde_json::Value> = entries(&delta_pack)
        .iter()
        .filter_map(|e| e.get("base").cloned())
        .collect();
    let (base, offset) = base_packs
        .iter()
        .find_map(|p| {
            entries(p).into_iter().find_map(|e| {
                bases.contains(&e["id"]).then(|| {
                    (
                        p,
                        e["offset"].as_u64().unwrap() + e["stored_len"].as_u64().unwrap() / 2,
                    )
                })
            })
        })
        .expect("a base of the second snapshot's deltas");
    let mut bad = std::fs::read(base).unwrap();
    bad[offset as usize] ^= 0x08;
    std::fs::write(base, &bad).unwrap();
    let (ok, v) = check(&repo, &["--read-data"]);
    assert!(!ok);
    assert_damage(&v, &[name(base)], &[a, b]);
}
