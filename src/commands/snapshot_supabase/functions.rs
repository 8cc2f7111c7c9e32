//! The edge functions part of a Supabase snapshot: from the API, or from a folder.

use super::*;

/// A function, its entrypoint and its files (path, bytes).
pub(super) type FunctionFiles = (FunctionInfo, Option<String>, Vec<(String, Vec<u8>)>);

/// A function's files as tree paths, sorted.
pub(super) fn function_paths(
    slug: &str,
    files: &[(String, Vec<u8>)],
) -> Vec<(Vec<String>, String, usize)> {
    let mut out: Vec<(Vec<String>, String, usize)> = files
        .iter()
        .enumerate()
        .map(|(i, (path, _))| {
            let (mut dirs, name) = key_to_path(path);
            dirs.insert(0, encode_component(slug));
            (dirs, name, i)
        })
        .collect();
    out.sort_by(|a, b| path_order(&a.0, &a.1, &b.0, &b.1));
    out
}

/// Reads `dir/<slug>/...` (a self-hosted project's `volumes/functions`).
pub(super) fn functions_from_dir(dir: &std::path::Path) -> Result<Vec<FunctionFiles>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read folder", dir, e))?;
    let mut slugs: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    slugs.sort();
    for path in slugs {
        let slug = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Invalid(format!("{}: not a UTF-8 name", path.display())))?
            .to_string();
        let mut files = Vec::new();
        let mut stack = vec![path.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).map_err(|e| Error::io("read folder", &d, e))? {
                let e = e.map_err(|e| Error::io("read folder", &d, e))?;
                let p = e.path();
                let ft = e.file_type().map_err(|e| Error::io("read", &p, e))?;
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file() {
                    let rel = p
                        .strip_prefix(&path)
                        .expect("below")
                        .to_string_lossy()
                        .replace('\\', "/");
                    let data = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
                    files.push((rel, data));
                }
            }
        }
        files.sort();
        let entry = ["index.ts", "index.js", "index.tsx"]
            .iter()
            .find(|n| files.iter().any(|(f, _)| f == *n))
            .map(|s| s.to_string());
        let info = FunctionInfo {
            slug: slug.clone(),
            name: slug,
            version: 0,
            status: "ACTIVE".into(),
            verify_jwt: None,
            entrypoint_path: entry.clone(),
            import_map_path: None,
            other: Default::default(),
        };
        out.push((info, entry, files));
    }
    Ok(out)
}

/// The functions part: metadata and files into the folder `functions`.
pub(super) fn snapshot_functions(
    main: &mut Archiver<'_>,
    functions: Vec<FunctionFiles>,
) -> Result<(Folder, Vec<FunctionEntry>)> {
    let mut builder = TreeBuilder::new(FUNCTIONS_DIR);
    let mut entries = Vec::new();
    let mut sorted = functions;
    sorted.sort_by_key(|f| encode_component(&f.0.slug));
    for (info, entrypoint, files) in sorted {
        for (dirs, name, i) in function_paths(&info.slug, &files) {
            let mut node = main.add_bytes(&name, &files[i].1, None)?;
            node.name = name;
            builder.add_file(main, &dirs, node)?;
        }
        entries.push(FunctionEntry {
            info,
            entrypoint,
            files: files.into_iter().map(|(p, _)| p).collect(),
        });
    }
    Ok((builder.finish(main)?, entries))
}
