//! Criterion benches of the ingest and restore stages, one at a time, on dump-like data.
//! `cargo bench --bench stages`; the end-to-end comparison with restic is `compare-restic.sh`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sbk::chunker::{Chunker, ChunkerParams};
use sbk::crypto::MasterKey;
use sbk::format::index::{IndexFile, IndexPack};
use sbk::format::pack::PackEntry;
use sbk::format::{delta, payload, BlobKind};
use sbk::index::Index;
use sbk::Id;

/// Tab-separated rows with ids, words and numbers: compresses about 3x, like table data.
fn dump_like(len: usize) -> Vec<u8> {
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(len + 100);
    let mut row = 0u64;
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        row += 1;
        let line = format!(
            "{row}\t{} {}\t{}\t{:016x}\n",
            words[(s % 8) as usize],
            words[((s >> 8) % 8) as usize],
            (s >> 16) % 1_000_000,
            s.rotate_left(17)
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

fn chunking(c: &mut Criterion) {
    let data = dump_like(64 << 20);
    let mut g = c.benchmark_group("chunker");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc_1MiB_avg", |b| {
        b.iter(|| Chunker::new(&data[..], ChunkerParams::default_with_seed(1)).count())
    });
    g.finish();
}

fn blobs(c: &mut Criterion) {
    let chunk = dump_like(1 << 20);
    let key = MasterKey::random();
    let mut g = c.benchmark_group("blob");
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("keyed_blake3", |b| b.iter(|| key.blob_id(&chunk)));
    let mut comp = zstd::bulk::Compressor::new(3).unwrap();
    let mut scratch = Vec::new();
    g.bench_function("zstd3_compress", |b| {
        b.iter(|| payload::encode_with(&mut comp, &chunk, &mut scratch, 0, 0))
    });
    let plain = payload::encode_with(&mut comp, &chunk, &mut scratch, 0, 0);
    g.bench_function("xchacha20poly1305_seal", |b| {
        b.iter(|| key.seal(b"sbk:blob", &plain))
    });
    let sealed = key.seal(b"sbk:blob", &plain);
    g.bench_function("open_and_decompress", |b| {
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        b.iter(|| {
            let p = key.open(b"sbk:blob", &sealed).unwrap();
            payload::decode_exact(&mut d, &p, chunk.len()).unwrap()
        })
    });
    g.finish();
}

/// A chunk and its successor after ~1% of its rows changed (every 100th row gets a new value).
fn changed_pair() -> (Vec<u8>, Vec<u8>) {
    let base = dump_like(1 << 20);
    let mut changed = Vec::with_capacity(base.len());
    for (i, line) in base.split_inclusive(|&b| b == b'\n').enumerate() {
        if i % 100 == 7 {
            changed.extend_from_slice(b"updated\trow\t42\n");
        } else {
            changed.extend_from_slice(line);
        }
    }
    (base, changed)
}

fn deltas(c: &mut Criterion) {
    let (base, data) = changed_pair();
    let mut g = c.benchmark_group("delta");
    g.throughput(Throughput::Bytes(data.len() as u64));
    for level in [1, 3] {
        let d = delta::encode(&base, &data, level, 0, 0).unwrap();
        eprintln!(
            "delta level {level}: {} bytes for {} (full zstd-1: {})",
            d.len(),
            data.len(),
            zstd::bulk::compress(&data, 1).unwrap().len()
        );
        g.bench_function(format!("encode_level{level}"), |b| {
            b.iter(|| delta::encode(&base, &data, level, 0, 0).unwrap())
        });
    }
    let d = delta::encode(&base, &data, 1, 0, 0).unwrap();
    g.bench_function("decode", |b| {
        b.iter(|| delta::decode(&base, &d, data.len()).unwrap())
    });
    g.bench_function("sketch", |b| b.iter(|| sbk::similarity::sketch(&data)));
    g.finish();
}

fn index(c: &mut Criterion) {
    // One million blobs in 16k packs: about 1 TiB of unique data at the 1 MiB average.
    let n = 1_000_000u32;
    let packs: Vec<IndexPack> = (0..n / 64)
        .map(|p| IndexPack {
            id: Id(*blake3::hash(&p.to_le_bytes()).as_bytes()),
            blobs: (0..64u32)
                .map(|i| PackEntry {
                    kind: BlobKind::Data,
                    id: Id(*blake3::hash(&(p * 64 + i).to_le_bytes()).as_bytes()),
                    offset: i * 300_000,
                    stored_len: 300_000,
                    raw_len: 1 << 20,
                    base: None,
                })
                .collect(),
        })
        .collect();
    let file = IndexFile {
        packs,
        ..Default::default()
    };
    let encoded = file.encode();
    let mut g = c.benchmark_group("index");
    g.sample_size(10);
    g.bench_function("decode_and_load_1M_blobs", |b| {
        b.iter(|| {
            let f = IndexFile::decode(&encoded).unwrap();
            let mut idx = Index::new();
            idx.add_file(&f).unwrap();
            idx.finalize();
            idx.len()
        })
    });
    let mut idx = Index::new();
    idx.add_file(&file).unwrap();
    idx.finalize();
    eprintln!(
        "index: {} blobs, {} heap bytes, {:.1} bytes per blob",
        idx.len(),
        idx.heap_bytes(),
        idx.heap_bytes() as f64 / idx.len() as f64
    );
    let probe: Vec<Id> = (0..1000u32)
        .map(|i| Id(*blake3::hash(&(i * 997).to_le_bytes()).as_bytes()))
        .collect();
    g.bench_function("lookup_1000", |b| {
        b.iter_batched(
            || (),
            |_| probe.iter().filter(|id| idx.contains(id)).count(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, chunking, blobs, deltas, index);
criterion_main!(benches);
