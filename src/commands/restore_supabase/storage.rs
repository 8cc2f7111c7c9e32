//! Restoring Storage: buckets, objects with their metadata, and the owners of
//! `storage.objects` put back after the uploads.

use super::*;

/// The storage part: buckets and objects. `db` is the target's database session, when the
/// database is reachable.
pub(super) fn restore_storage(
    snap: &Snap<'_>,
    sb: &SupabaseManifest,
    client: Option<&StorageClient>,
    db: Option<&Client>,
    opts: &SupabaseRestoreOptions,
    out: &mut SupabaseRestoreOutcome,
) -> Result<()> {
    let (repo, index) = (snap.repo, &snap.index);
    let Some(storage) = snap.root.dir(STORAGE_DIR) else {
        out.skipped_parts
            .push("storage: the snapshot holds none".into());
        return Ok(());
    };
    let has_buckets_table = match db {
        Some(db) => db
            .query("SELECT to_regclass('storage.buckets') IS NOT NULL", &[])?
            .first()
            .is_some_and(|r| r.get(0)),
        None => false,
    };
    for b in &sb.buckets {
        out.buckets.push(b.id.clone());
        if opts.dry_run {
            continue;
        }
        let client = client.expect("checked before");
        if !client.bucket_exists(&b.id)? {
            client.create_bucket(&b.id)?;
        }
        if let Some(db) = db.filter(|_| has_buckets_table) {
            db.query(
                "UPDATE storage.buckets SET public = $2, file_size_limit = $3, allowed_mime_types = $4 WHERE id = $1",
                &[&b.id, &b.public, &b.file_size_limit, &b.allowed_mime_types],
            )?;
        }
    }
    // Objects: a bounded queue to `connections` upload threads.
    let (tx, rx) = crossbeam_channel::bounded::<(String, String, FileNode)>(opts.connections * 2);
    let activity = repo.activity();
    activity.next_phase("restore storage", 0);
    let uploaded = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let error: Mutex<Option<Error>> = Mutex::new(None);
    let failed = || error.lock().expect("error").is_some();
    std::thread::scope(|s| -> Result<()> {
        for _ in 0..opts.connections.max(1) {
            let rx = rx.clone();
            let (uploaded, bytes, error) = (&uploaded, &bytes, &error);
            s.spawn(move || {
                for (bucket, key, node) in rx {
                    let r = upload_object(repo, index, client, &bucket, &key, &node, opts.dry_run);
                    match r {
                        Ok(()) => {
                            uploaded.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(node.size, Ordering::Relaxed);
                            activity.add_bytes(if opts.dry_run { 0 } else { node.size });
                            activity.add_items(1);
                        }
                        Err(e) => {
                            error
                                .lock()
                                .expect("error")
                                .get_or_insert(Error::Source(format!(
                                    "storage object {bucket}/{key}: {e}"
                                )));
                            return;
                        }
                    }
                }
            });
        }
        drop(rx);
        for page in &storage.trees {
            walk(repo, index, page, None, &mut |v| {
                if failed() {
                    return Err(Error::Source("upload stopped".into()));
                }
                if let Visit::File(dirs, f) = v {
                    let Some((bucket, rest)) = dirs.split_first() else {
                        return Ok(());
                    };
                    let key = path_to_key(rest, &f.name);
                    if !opts.dry_run {
                        activity.add_bytes_total(f.size);
                    }
                    if tx.send((decode_component(bucket), key, f.clone())).is_err() {
                        return Err(Error::Source("upload stopped".into()));
                    }
                }
                Ok(())
            })
            .or_else(|e| if failed() { Ok(()) } else { Err(e) })?;
        }
        drop(tx);
        Ok(())
    })?;
    if let Some(e) = error.into_inner().expect("error") {
        return Err(e);
    }
    out.objects = uploaded.load(Ordering::Relaxed);
    out.object_bytes = bytes.load(Ordering::Relaxed);
    Ok(())
}

/// Reads one object from the repository (verified) and uploads it with its attributes.
pub(super) fn upload_object(
    repo: &Repository,
    index: &crate::index::Index,
    client: Option<&StorageClient>,
    bucket: &str,
    key: &str,
    node: &FileNode,
    dry_run: bool,
) -> Result<()> {
    if dry_run {
        return Ok(());
    }
    let client = client.expect("a storage client without --dry-run");
    let attrs = node.attrs.clone().unwrap_or_default();
    let text = |k: &str| attrs.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let meta = ObjectMeta {
        content_type: text("content_type"),
        cache_control: text("cache_control"),
        etag: None,
        size: node.size,
        metadata: attrs
            .get("metadata")
            .and_then(|m| serde_json::from_value(m.clone()).ok())
            .unwrap_or_default(),
    };
    if node.size <= SMALL_OBJECT {
        let mut buf = Vec::with_capacity(node.size as usize);
        write_file(repo, index, node, &mut buf)?;
        client.put(bucket, key, &meta, &buf)
    } else {
        // Staged in a private temporary file: a large object is never held in memory.
        let (mut tmp, _tracked) = crate::cleanup::scratch_file("object")?;
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            write_file(repo, index, node, &mut w)?;
            w.flush()
                .map_err(|e| Error::io("write", std::env::temp_dir(), e))?;
        }
        client.put_file(bucket, key, &meta, tmp.path())
    }
}

/// The `storage.objects` columns an upload through Storage replaces and a restore puts back
/// (older projects lack some).
pub(super) fn owner_columns(db: &Client) -> Result<Vec<String>> {
    Ok(db
        .query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'storage' \
             AND table_name = 'objects' AND column_name IN ('owner', 'owner_id', 'user_metadata')",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Puts back `storage.objects` owners and user metadata that the uploads replaced.
pub(super) fn restore_owners(db: &Client) -> Result<u64> {
    let cols = owner_columns(db)?;
    if cols.is_empty() {
        return Ok(0);
    }
    let set: Vec<String> = cols.iter().map(|c| format!("{c} = t.{c}")).collect();
    let differs: Vec<String> = cols
        .iter()
        .map(|c| format!("o.{c} IS DISTINCT FROM t.{c}"))
        .collect();
    // The platform's own update trigger would stamp updated_at: not for a restore.
    let _ = db.batch("SET session_replication_role = replica");
    let rows = db.query(
        &format!(
            "WITH u AS (UPDATE storage.objects o SET {} FROM pg_temp.sbk_object_owners t \
             WHERE o.bucket_id = t.bucket_id AND o.name = t.name AND ({}) RETURNING 1) \
             SELECT count(*) FROM u",
            set.join(", "),
            differs.join(" OR ")
        ),
        &[],
    )?;
    let _ = db.batch("RESET session_replication_role");
    Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
}

/// Keeps the restored `storage.objects` owners in a temporary table of `db`'s session.
pub(super) fn save_owners(db: &Client) -> Result<bool> {
    let has = db
        .query("SELECT to_regclass('storage.objects') IS NOT NULL", &[])?
        .first()
        .is_some_and(|r| r.get(0));
    if !has {
        return Ok(false);
    }
    let cols = owner_columns(db)?;
    if cols.is_empty() {
        return Ok(false);
    }
    db.batch(&format!(
        "CREATE TEMP TABLE sbk_object_owners AS SELECT bucket_id, name, {} FROM storage.objects",
        cols.join(", ")
    ))?;
    Ok(true)
}
