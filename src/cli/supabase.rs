//! `snapshot supabase` and `restore --to-supabase`: options in, outcome rendered.

use std::io::Write;

use indicatif::HumanBytes;
use sbk::commands::restore_supabase::{restore_to_supabase, SupabaseRestoreOptions};
use sbk::commands::snapshot_supabase::{Required, SupabaseOptions};
use sbk::supabase::manifest::SupabaseManifest;
use sbk::supabase::project::{Project, ProjectSpec};
use sbk::Error;

use super::args::{
    GlobalArgs, PgBinArgs, RestoreSupabaseArgs, SnapshotCommon, SupabaseProjectArgs,
};
use super::{open, print_json, stdout_err, tools};

/// The project the options name.
pub(super) fn project(a: &SupabaseProjectArgs) -> Result<Project, Error> {
    ProjectSpec {
        project_url: a.project_url.clone(),
        db: a.db.clone(),
        storage_endpoint: a.storage_endpoint.clone(),
        storage_region: a.storage_region.clone(),
        api_url: a.api_url.clone(),
        project_ref: a.project_ref.clone(),
        functions_dir: a.functions_dir.clone(),
    }
    .resolve()
    .inspect(|p| {
        // The password is not needed to judge the TLS settings.
        let conn = sbk::postgres::conn::ConnParams::resolve(
            Some(&p.db),
            &sbk::postgres::conn::process_env,
        );
        if let Some(w) = conn.ok().and_then(|c| c.tls_warning()) {
            eprintln!("sbk: {w}");
        }
    })
}

/// What `snapshot supabase` was asked for.
pub(super) struct SnapshotRequest {
    pub project: SupabaseProjectArgs,
    pub buckets: Vec<String>,
    pub exclude_table_data: Vec<String>,
    pub count_rows: bool,
    pub no_storage: bool,
    pub no_functions: bool,
    pub require: Vec<String>,
    pub reread_storage: bool,
    pub pg: PgBinArgs,
    pub common: SnapshotCommon,
}

pub(super) fn snapshot_options(
    g: &GlobalArgs,
    r: SnapshotRequest,
) -> Result<SupabaseOptions, Error> {
    Ok(SupabaseOptions {
        credentials: Default::default(),
        stop: None,
        project: project(&r.project)?,
        functions_dir: r.project.functions_dir.clone(),
        require: Required {
            storage: r.require.iter().any(|p| p == "storage"),
            functions: r.require.iter().any(|p| p == "functions"),
        },
        buckets: r.buckets,
        exclude_table_data: r.exclude_table_data,
        count_rows: r.count_rows,
        no_storage: r.no_storage,
        no_functions: r.no_functions,
        reread_storage: r.reread_storage,
        connections: g.s3_connections as usize,
        ca_cert: g.s3_ca_cert.clone(),
        retry_deadline: g.retry_deadline,
        tools: tools(&r.pg),
        common: super::options::snapshot_common(&r.common),
    })
}

/// Lines about the parts a snapshot took or left out.
pub(super) fn print_snapshot_notes(g: &GlobalArgs, sb: &SupabaseManifest) -> Result<(), Error> {
    if g.quiet || g.json {
        return Ok(());
    }
    for s in &sb.skipped {
        eprintln!("sbk: skipped {s}");
    }
    if let Some(st) = &sb.storage {
        for v in &st.vanished {
            eprintln!("sbk: warning: storage object {v} was deleted during the snapshot; skipped");
        }
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "storage: {} buckets, {} objects ({}), {} downloaded, {} unchanged",
            sb.buckets.len(),
            st.objects,
            HumanBytes(st.bytes),
            st.downloaded,
            st.reused
        )
        .map_err(stdout_err)?;
    }
    if let Some(f) = &sb.functions {
        let mut out = std::io::stdout().lock();
        writeln!(out, "functions: {}", f.len()).map_err(stdout_err)?;
    }
    Ok(())
}

/// `restore <id> --to-supabase`.
pub(super) fn restore(
    g: &GlobalArgs,
    snapshot: &sbk::repository::SnapshotRef,
    a: RestoreSupabaseArgs,
    pg: &PgBinArgs,
) -> Result<(), Error> {
    let repo = open(g)?;
    let opts = SupabaseRestoreOptions {
        project: project(&a.project)?,
        functions_dir: a.project.functions_dir.clone(),
        only: a.only,
        dry_run: a.dry_run,
        connections: g.s3_connections as usize,
        ca_cert: g.s3_ca_cert.clone(),
        retry_deadline: g.retry_deadline,
        tools: tools(pg),
    };
    let out = {
        let _p = super::watch(g, "restore", &repo);
        restore_to_supabase(&repo, snapshot, &opts)?
    };
    if g.json {
        return print_json(&out);
    }
    if g.quiet {
        return Ok(());
    }
    let mut o = std::io::stdout().lock();
    let w = |o: &mut std::io::StdoutLock<'_>, s: String| writeln!(o, "{s}").map_err(stdout_err);
    let verb = if out.dry_run {
        "would restore"
    } else {
        "restored"
    };
    if !out.extensions_created.is_empty() {
        w(
            &mut o,
            format!("extensions created: {}", out.extensions_created.join(", ")),
        )?;
    }
    w(
        &mut o,
        format!(
            "roles: {} created, {} existed{}",
            out.roles_created,
            out.roles_existing,
            if out.role_errors.is_empty() {
                String::new()
            } else {
                format!(", {} refused", out.role_errors.len())
            }
        ),
    )?;
    for e in &out.role_errors {
        w(&mut o, format!("  role statement refused: {e}"))?;
    }
    if let Some(p) = &out.database {
        let kept: usize = p.kept.values().sum();
        w(
            &mut o,
            format!(
                "database: {verb} {kept} entries, skipped {}",
                p.skipped_count()
            ),
        )?;
        for (why, entries) in &p.skipped {
            w(
                &mut o,
                format!("  skipped {} {}:", entries.len(), why.describe()),
            )?;
            let shown = if g.verbose { entries.len() } else { 5 };
            for e in entries.iter().take(shown) {
                w(&mut o, format!("    {e}"))?;
            }
            if entries.len() > shown {
                w(
                    &mut o,
                    format!("    ... {} more (-v lists all)", entries.len() - shown),
                )?;
            }
        }
    }
    if !out.buckets.is_empty() {
        w(
            &mut o,
            format!(
                "storage: {verb} {} buckets, {} objects ({}); {} owners put back",
                out.buckets.len(),
                out.objects,
                HumanBytes(out.object_bytes),
                out.owners_restored
            ),
        )?;
    }
    if !out.functions.is_empty() {
        w(
            &mut o,
            format!(
                "functions: {verb} {} ({}) to {}",
                out.functions.len(),
                out.functions.join(", "),
                out.functions_to.as_deref().unwrap_or("-")
            ),
        )?;
    }
    for s in &out.skipped_parts {
        w(&mut o, format!("not restored: {s}"))?;
    }
    if !out.manual.is_empty() {
        w(&mut o, "to do by hand:".into())?;
        for m in &out.manual {
            w(&mut o, format!("  - {m}"))?;
        }
    }
    w(
        &mut o,
        format!(
            "{} in {:.1}s",
            if out.dry_run { "dry run done" } else { "done" },
            out.duration_secs
        ),
    )?;
    Ok(())
}
