//! Restoring edge functions: deployed through the Management API, or written to a folder.

use super::*;

/// Files as (path, bytes).
pub(super) type Files = Vec<(String, Vec<u8>)>;

/// Collects each function's files from the snapshot: slug -> [(path, bytes)].
pub(super) fn function_files(snap: &Snap<'_>) -> Result<BTreeMap<String, Files>> {
    let (repo, index) = (snap.repo, &snap.index);
    let mut out: BTreeMap<String, Files> = BTreeMap::new();
    let Some(dir) = snap.root.dir(FUNCTIONS_DIR) else {
        return Ok(out);
    };
    for page in &dir.trees {
        walk(repo, index, page, None, &mut |v| {
            if let Visit::File(dirs, f) = v {
                if let Some((slug, rest)) = dirs.split_first() {
                    let mut data = Vec::new();
                    write_file(repo, index, f, &mut data)?;
                    out.entry(decode_component(slug))
                        .or_default()
                        .push((path_to_key(rest, &f.name), data));
                }
            }
            Ok(())
        })?;
    }
    Ok(out)
}

pub(super) fn restore_functions(
    snap: &Snap<'_>,
    sb: &SupabaseManifest,
    api: Option<&ApiClient>,
    opts: &SupabaseRestoreOptions,
    out: &mut SupabaseRestoreOutcome,
) -> Result<()> {
    let Some(entries) = &sb.functions else {
        out.skipped_parts
            .push("functions: the snapshot holds none".into());
        return Ok(());
    };
    let files = function_files(snap)?;
    if let Some(dir) = &opts.functions_dir {
        out.functions_to = Some(dir.display().to_string());
        for e in entries {
            let slug = &e.info.slug;
            crate::repository::validate_name(slug).map_err(Error::Invalid)?;
            for (path, data) in files.get(slug).map(Vec::as_slice).unwrap_or_default() {
                let dest = dir.join(slug).join(path);
                if opts.dry_run {
                    continue;
                }
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| Error::io("create folder", parent, e))?;
                }
                std::fs::write(&dest, data).map_err(|e| Error::io("write", &dest, e))?;
            }
            out.functions.push(slug.clone());
        }
        return Ok(());
    }
    let Some(api) = api else {
        out.skipped_parts.push(format!(
            "functions: no Management API access to the target (set {} and give the target's \
             --project-url or --project-ref), or write them with --functions-dir",
            crate::supabase::api::TOKEN_VAR
        ));
        return Ok(());
    };
    out.functions_to = Some("api".into());
    for e in entries {
        let slug = &e.info.slug;
        let mut metadata = serde_json::json!({
            "entrypoint_path": e.entrypoint.clone().unwrap_or_else(|| "index.ts".into()),
            "name": if e.info.name.is_empty() { slug.clone() } else { e.info.name.clone() },
        });
        if let Some(v) = e.info.verify_jwt {
            metadata["verify_jwt"] = v.into();
        }
        if let Some(m) = e.info.import_map_path.as_deref().filter(|m| !m.is_empty()) {
            // The API lists it as a file URL; deploy takes a path among the files.
            let rel = m.rsplit('/').next().unwrap_or(m);
            metadata["import_map_path"] = rel.into();
        }
        if !opts.dry_run {
            let f = files.get(slug).cloned().unwrap_or_default();
            api.deploy_function(slug, &metadata, &f)?;
        }
        out.functions.push(slug.clone());
    }
    Ok(())
}
