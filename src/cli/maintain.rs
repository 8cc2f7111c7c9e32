//! Maintaining the repository: forget, prune, check, stats and repair.

use super::*;

/// `sbk prune`.
pub(super) fn prune(g: &GlobalArgs, args: args::PruneArgs, dry_run: bool) -> Result<(), Error> {
    let repo = open(g)?;
    let report = {
        let _p = watch(g, "prune", &repo);
        commands::prune::prune(&repo, &prune_options(&args, dry_run))?
    };
    print_prune(g, &report)?;
    Ok(())
}

/// `sbk forget`, and the prune after it with `--prune`.
pub(super) fn forget(g: &GlobalArgs, args: args::ForgetArgs) -> Result<(), Error> {
    let repo = open(g)?;
    let report = commands::forget::forget(&repo, &forget_options(&args))?;
    let pruned = match args.prune {
        true => {
            let _p = watch(g, "prune", &repo);
            Some(commands::prune::prune(
                &repo,
                &prune_options(&args.prune_args, args.dry_run),
            )?)
        }
        false => None,
    };
    if g.json {
        #[derive(Serialize)]
        struct Both<'a> {
            forget: &'a [commands::forget::ForgetGroup],
            prune: &'a commands::prune::PruneReport,
        }
        match &pruned {
            Some(p) => print_json(&Both {
                forget: &report.groups,
                prune: p,
            })?,
            None => print_json(&report.groups)?,
        }
    } else {
        print_forget(g, &report)?;
        if let Some(p) = &pruned {
            print_prune(g, p)?;
        }
    }
    Ok(())
}

/// `sbk stats`.
pub(super) fn stats(g: &GlobalArgs) -> Result<(), Error> {
    let repo = open(g)?;
    let st = commands::stats::stats(&repo)?;
    if g.json {
        print_json(&st)?;
    } else {
        print_stats(g, &st)?;
    }
    Ok(())
}

/// `sbk repair index`.
pub(super) fn repair_index(g: &GlobalArgs) -> Result<(), Error> {
    let repo = open(g)?;
    let r = {
        let _p = watch(g, "repair", &repo);
        commands::repair::repair_index(&repo)?
    };
    if g.json {
        print_json(&r)?;
    } else {
        say!(
            g,
            "indexed {} blobs of {} packs in {} new index files (superseding {})",
            r.blobs,
            r.packs_indexed,
            r.index_files_written,
            r.index_files_superseded
        );
        for p in &r.unreadable {
            eprintln!("sbk: pack {} was not indexed: {}", p.id, p.message);
        }
        if !r.unreadable.is_empty() {
            say_err(
                g,
                "run `sbk repair packs` to move the unreadable packs aside",
            );
        }
    }
    Ok(())
}

/// `sbk check`: exit 1 when anything is damaged.
pub(super) fn check(
    g: &GlobalArgs,
    read_data: bool,
    read_data_subset: Option<commands::check::ReadData>,
) -> Result<(), Error> {
    let repo = open(g)?;
    let opts = commands::check::CheckOptions {
        read_data: match (read_data, read_data_subset) {
            (true, _) => commands::check::ReadData::All,
            (false, Some(s)) => s,
            (false, None) => commands::check::ReadData::None,
        },
    };
    let report = {
        let _p = watch(g, "check", &repo);
        commands::check::check(&repo, &opts)?
    };
    if g.json {
        print_json(&report)?;
    } else {
        print_check(g, &report)?;
    }
    if !report.ok {
        return Err(Error::Silent(1));
    }
    Ok(())
}
