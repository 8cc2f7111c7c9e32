//! The Storage part of a Supabase snapshot: every bucket's objects, taken from the parent
//! snapshot when unchanged, downloaded and stored through a pipeline otherwise (see the parent
//! module).

use super::*;

/// A storage object on its way through the pipeline.
pub(super) struct Work {
    seq: u64,
    bucket: String,
    info: ObjectInfo,
    /// The parent snapshot's version, for deltas.
    parent: Option<FileNode>,
}

pub(super) enum Fetched {
    Small(Work, ObjectMeta, Vec<u8>),
    Large(Work, ObjectMeta, aws_sdk_s3::primitives::ByteStream),
}

/// A stored object, or one that vanished.
pub(super) enum Done {
    Stored(FileNode),
    Vanished(String),
}

/// Results by sequence number, for the tree builder to take in order.
pub(super) struct Results {
    done: Mutex<ResultsState>,
    changed: Condvar,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    downloaded: std::sync::atomic::AtomicU64,
    reused: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
pub(super) struct ResultsState {
    /// (bucket, object folders, outcome) by sequence number.
    ready: BTreeMap<u64, (String, Vec<String>, Done)>,
    /// Sequence numbers the builder has taken.
    taken: u64,
    /// Total, once the planner has listed everything.
    total: Option<u64>,
}

impl Results {
    fn fail(&self, e: Error) {
        self.error.lock().expect("error").get_or_insert(e);
        self.failed.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    fn put(&self, seq: u64, bucket: String, info: &ObjectInfo, done: Done) {
        let (dirs, _) = key_to_path(&info.key);
        self.done
            .lock()
            .expect("results")
            .ready
            .insert(seq, (bucket, dirs, done));
        self.changed.notify_all();
    }
}

pub(super) fn attrs_of(
    info: &ObjectInfo,
    meta: &ObjectMeta,
) -> serde_json::Map<String, serde_json::Value> {
    let mut a = serde_json::Map::new();
    a.insert("key".into(), info.key.clone().into());
    a.insert("size".into(), info.size.into());
    // The listing's ETag and time: the next snapshot compares its listing with these. If the
    // object changed between listing and download, the download's ETag is kept instead, so
    // the next listing differs and the object is fetched again.
    let etag = match &meta.etag {
        Some(e) if unquote(e) != unquote(&info.etag) => e.clone(),
        _ => info.etag.clone(),
    };
    a.insert("etag".into(), etag.into());
    a.insert("last_modified".into(), info.last_modified.clone().into());
    if let Some(c) = &meta.content_type {
        a.insert("content_type".into(), c.clone().into());
    }
    if let Some(c) = &meta.cache_control {
        a.insert("cache_control".into(), c.clone().into());
    }
    if !meta.metadata.is_empty() {
        a.insert(
            "metadata".into(),
            serde_json::to_value(&meta.metadata).expect("map serializes"),
        );
    }
    a
}

/// An ETag without the quotes some servers put around it in one answer and not another.
pub(super) fn unquote(e: &str) -> &str {
    e.trim_matches('"')
}

/// Whether the parent's entry has this listing entry's size and time (and, when given, ETag).
pub(super) fn same_listing(parent: &FileNode, info: &ObjectInfo) -> bool {
    let Some(a) = &parent.attrs else {
        return false;
    };
    a.get("size").and_then(|v| v.as_u64()) == Some(info.size)
        && parent.size == info.size
        && a.get("last_modified").and_then(|v| v.as_str()) == Some(info.last_modified.as_str())
}

/// Whether the parent's entry describes this object: same size, time and ETag (the server's
/// hash of the content). Never judged without an ETag.
pub(super) fn unchanged(parent: &FileNode, info: &ObjectInfo) -> bool {
    let etag = parent
        .attrs
        .as_ref()
        .and_then(|a| a.get("etag"))
        .and_then(|v| v.as_str());
    same_listing(parent, info)
        && !info.etag.is_empty()
        && etag.is_some_and(|e| unquote(e) == unquote(&info.etag))
}

pub(super) enum Reuse {
    No,
    Yes(FileNode),
    Vanished,
}

/// Decides whether an object can be taken from the parent snapshot without downloading it.
/// A listing without ETags (some servers send none) costs a HEAD for the objects whose size
/// and time match.
pub(super) fn reuse(client: &StorageClient, w: &mut Work, reread: bool) -> Result<Reuse> {
    let Some(parent) = w.parent.as_ref().filter(|_| !reread) else {
        return Ok(Reuse::No);
    };
    if !same_listing(parent, &w.info) {
        return Ok(Reuse::No);
    }
    if w.info.etag.is_empty() {
        match client.head_etag(&w.bucket, &w.info.key)? {
            Some(e) => w.info.etag = e,
            None => return Ok(Reuse::Vanished),
        }
    }
    Ok(if unchanged(parent, &w.info) {
        Reuse::Yes(parent.clone())
    } else {
        Reuse::No
    })
}

/// The storage part: every bucket's objects into the folder `storage`.
#[allow(clippy::too_many_arguments)]
pub(super) fn snapshot_storage(
    repo: &Repository,
    index: &Index,
    opts: &SupabaseOptions,
    client: &StorageClient,
    buckets: &mut [BucketInfo],
    parent_storage: Option<Vec<Id>>,
    main: &mut Archiver<'_>,
    progress: &Arc<Progress>,
) -> Result<(Folder, StorageSummary, ArchiveStats)> {
    let results = Results {
        done: Mutex::new(ResultsState::default()),
        changed: Condvar::new(),
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
        downloaded: Default::default(),
        reused: Default::default(),
    };
    let connections = opts.connections.max(1);
    let archivers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    let streams = large_streams(connections);
    let (work_tx, work_rx) = bounded::<Work>(connections * 2);
    let (fetch_tx, fetch_rx) = bounded::<Fetched>(archivers * 2);
    let (large_tx, large_rx) = bounded::<Fetched>(0);
    let bucket_ids: Vec<String> = buckets.iter().map(|b| b.id.clone()).collect();
    let mut builder = TreeBuilder::new(STORAGE_DIR);
    let mut summary = StorageSummary::default();
    let mut per_bucket: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut stats = ArchiveStats::default();

    std::thread::scope(|s| -> Result<()> {
        // Planner: listing, order, reuse decisions.
        let planner = {
            let results = &results;
            let bucket_ids = &bucket_ids;
            let parent_storage = parent_storage.clone();
            s.spawn(move || {
                let mut cursor = match &parent_storage {
                    Some(pages) => TreeCursor::new(repo, index, pages),
                    None => TreeCursor::empty(repo, index),
                };
                let mut pending_parent = None;
                let mut seq = 0u64;
                let mut sorted: Vec<&String> = bucket_ids.iter().collect();
                sorted.sort_by_key(|b| encode_component(b));
                for bucket in sorted {
                    let mut objects = match client.list_objects(bucket) {
                        Ok(o) => o,
                        Err(e) => return results.fail(e),
                    };
                    // Tree order (by escaped path components), whatever the server's order.
                    let mut keyed: Vec<(Vec<String>, String, ObjectInfo)> = objects
                        .drain(..)
                        .map(|o| {
                            let (mut d, n) = key_to_path(&o.key);
                            d.insert(0, encode_component(bucket));
                            (d, n, o)
                        })
                        .collect();
                    keyed.sort_by(|a, b| path_order(&a.0, &a.1, &b.0, &b.1));
                    for (dirs, name, info) in keyed {
                        // Wait while too far ahead of the builder.
                        {
                            let mut st = results.done.lock().expect("results");
                            while seq >= st.taken + WINDOW && !results.failed.load(Ordering::SeqCst)
                            {
                                st = results
                                    .changed
                                    .wait_timeout(st, Duration::from_millis(100))
                                    .expect("results")
                                    .0;
                            }
                        }
                        if results.failed.load(Ordering::SeqCst) {
                            return;
                        }
                        if opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                            return results.fail(Error::Interrupted(
                                "the snapshot was stopped by a shutdown request; nothing was saved"
                                    .into(),
                            ));
                        }
                        // The parent's entry at this path, if any.
                        let parent = loop {
                            let next = match pending_parent.take() {
                                Some(p) => Some(p),
                                None => match cursor.next_file() {
                                    Ok(n) => n,
                                    Err(e) => return results.fail(e),
                                },
                            };
                            let Some((pd, pnode)) = next else { break None };
                            match path_order(&pd, &pnode.name, &dirs, &name) {
                                std::cmp::Ordering::Less => continue,
                                std::cmp::Ordering::Equal => break Some(pnode),
                                std::cmp::Ordering::Greater => {
                                    pending_parent = Some((pd, pnode));
                                    break None;
                                }
                            }
                        };
                        if work_tx
                            .send(Work {
                                seq,
                                bucket: bucket.clone(),
                                info,
                                parent,
                            })
                            .is_err()
                        {
                            return;
                        }
                        seq += 1;
                    }
                }
                results.done.lock().expect("results").total = Some(seq);
                results.changed.notify_all();
            })
        };
        // Downloaders.
        for _ in 0..connections {
            let (rx, results) = (work_rx.clone(), &results);
            let (tx, large_tx) = (fetch_tx.clone(), large_tx.clone());
            s.spawn(move || {
                for mut w in rx {
                    if results.failed.load(Ordering::SeqCst) {
                        return;
                    }
                    match reuse(client, &mut w, opts.reread_storage) {
                        Ok(Reuse::No) => {}
                        Ok(Reuse::Yes(node)) => {
                            results.reused.fetch_add(1, Ordering::Relaxed);
                            results.put(w.seq, w.bucket, &w.info, Done::Stored(node));
                            continue;
                        }
                        Ok(Reuse::Vanished) => {
                            let key = w.info.key.clone();
                            results.put(w.seq, w.bucket, &w.info, Done::Vanished(key));
                            continue;
                        }
                        Err(e) => return results.fail(e),
                    }
                    let got = if w.info.size <= SMALL_OBJECT {
                        client
                            .get_bytes(&w.bucket, &w.info.key)
                            .map(|r| r.map(|(m, b)| (m, Ok(b))))
                    } else {
                        client
                            .get(&w.bucket, &w.info.key)
                            .map(|r| r.map(|(m, b)| (m, Err(b))))
                    };
                    let fetched = match got {
                        Ok(Some((m, Ok(bytes)))) => Fetched::Small(w, m, bytes),
                        Ok(Some((m, Err(body)))) => Fetched::Large(w, m, body),
                        Ok(None) => {
                            // Deleted since the listing: skipped and reported.
                            let key = w.info.key.clone();
                            results.put(w.seq, w.bucket, &w.info, Done::Vanished(key));
                            continue;
                        }
                        Err(e) => return results.fail(e),
                    };
                    results.downloaded.fetch_add(1, Ordering::Relaxed);
                    let lane = match fetched {
                        Fetched::Small(..) => &tx,
                        Fetched::Large(..) => &large_tx,
                    };
                    if lane.send(fetched).is_err() {
                        return;
                    }
                }
            });
        }
        drop(fetch_tx);
        drop(large_tx);
        drop(work_rx);
        // Archivers: one per core for small objects, `streams` for large ones (each of those
        // runs the streaming pipeline with its own seal workers, so it is not bound to a core;
        // it is there so that several large bodies are read at once).
        let mut archiver_handles = Vec::new();
        let lanes = std::iter::repeat_n(&fetch_rx, archivers)
            .chain(std::iter::repeat_n(&large_rx, streams));
        for rx in lanes {
            let (rx, results, progress) = (rx.clone(), &results, Arc::clone(progress));
            archiver_handles.push(s.spawn(move || -> Result<ArchiveStats> {
                let mut ar = Archiver::new(repo, index, progress);
                for f in rx {
                    if results.failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let (w, meta, node) = match f {
                        Fetched::Small(w, meta, bytes) => {
                            let parent = delta_parent(&w, opts);
                            let node = ar.add_bytes(&w.info.key, &bytes, parent.as_ref());
                            (w, meta, node)
                        }
                        Fetched::Large(w, meta, body) => {
                            let parent = delta_parent(&w, opts);
                            let reader = client.reader(body);
                            let node = ar.add_stream_cancellable(
                                &w.info.key,
                                reader,
                                parent.as_ref(),
                                &|| {},
                            );
                            (w, meta, node)
                        }
                    };
                    match node {
                        Ok(mut node) => {
                            let (_, name) = key_to_path(&w.info.key);
                            node.name = name;
                            node.attrs = Some(attrs_of(&w.info, &meta));
                            results.put(w.seq, w.bucket.clone(), &w.info, Done::Stored(node));
                        }
                        Err(e) => {
                            results.fail(Error::Source(format!(
                                "storage object {}/{}: {e}",
                                w.bucket, w.info.key
                            )));
                            break;
                        }
                    }
                }
                Ok(ar.finish()?.0)
            }));
        }
        drop(fetch_rx);
        drop(large_rx);
        // Builder: results in order.
        let mut next = 0u64;
        loop {
            let item = {
                let mut st = results.done.lock().expect("results");
                loop {
                    if results.failed.load(Ordering::SeqCst) {
                        break None;
                    }
                    if let Some(item) = st.ready.remove(&next) {
                        st.taken = next + 1;
                        break Some(item);
                    }
                    if st.total == Some(next) {
                        break None;
                    }
                    st = results
                        .changed
                        .wait_timeout(st, Duration::from_millis(100))
                        .expect("results")
                        .0;
                }
            };
            results.changed.notify_all();
            let Some((bucket, mut dirs, done)) = item else {
                break;
            };
            next += 1;
            match done {
                Done::Stored(node) => {
                    let size = node.size;
                    dirs.insert(0, encode_component(&bucket));
                    if let Err(e) = builder.add_file(main, &dirs, node) {
                        results.fail(e);
                        break;
                    }
                    summary.objects += 1;
                    summary.bytes += size;
                    let b = per_bucket.entry(bucket).or_default();
                    b.0 += 1;
                    b.1 += size;
                }
                Done::Vanished(key) => summary.vanished.push(format!("{bucket}/{key}")),
            }
        }
        let _ = planner.join();
        for h in archiver_handles {
            match h.join() {
                Ok(Ok(st)) => stats.merge(&st),
                Ok(Err(e)) => results.fail(e),
                Err(_) => results.fail(Error::Source("a storage archiver failed".into())),
            }
        }
        Ok(())
    })?;
    if let Some(e) = results.error.lock().expect("error").take() {
        return Err(e);
    }
    for b in buckets.iter_mut() {
        if let Some((n, bytes)) = per_bucket.get(&b.id) {
            b.objects = *n;
            b.bytes = *bytes;
        }
    }
    summary.downloaded = results.downloaded.load(Ordering::Relaxed);
    summary.reused = results.reused.load(Ordering::Relaxed);
    let folder = builder.finish(main)?;
    Ok((folder, summary, stats))
}

/// The parent's version of an object as a delta parent; an empty one (so sketches are
/// recorded) for a new object; none with `--no-delta`.
pub(super) fn delta_parent(w: &Work, opts: &SupabaseOptions) -> Option<ParentFile> {
    if opts.common.no_delta {
        return None;
    }
    match &w.parent {
        Some(p) if p.chunks.len() == p.content.len() && !p.content.is_empty() => {
            Some(ParentFile::new(
                p.content
                    .iter()
                    .copied()
                    .zip(p.chunks.iter().copied())
                    .collect(),
            ))
        }
        _ => Some(ParentFile::default()),
    }
}
