//! The steps of a job run: snapshot, forget, prune, check and the restore drill.

use super::*;

/// The newest uploaded snapshot of a source (its whole cluster), which a drill restores.
fn newest_to_drill(
    repo: &crate::Repository,
    filter: &crate::repository::Source,
    what: &str,
    source: &str,
) -> Result<(crate::Id, crate::repository::Snapshot)> {
    let all = repo.list_snapshots_cached()?;
    let filter = commands::forget::widen_to_cluster(&all, filter);
    all.into_iter()
        .filter(|(id, s)| !repo.is_spooled(id) && commands::forget::matches_source(s, &filter))
        .max_by_key(|(_, s)| s.time)
        .ok_or_else(|| Error::NotFound(format!("no {what} of source {source} to drill")))
}

impl Runner<'_> {
    /// A Supabase source's snapshot, its secrets resolved.
    pub(super) fn snapshot_supabase(
        &self,
        src: &SourceConfig,
        sb: &crate::automation::config::SupabaseSourceConfig,
        repo: &crate::Repository,
    ) -> Result<commands::SnapshotView> {
        let what = |f: &str| format!("{f} of source {}", src.name);
        let storage = match (&sb.storage_access_key_id, &sb.storage_secret_access_key) {
            (Some(id), Some(secret)) => Some((
                id.resolve(&what("storage_access_key_id"))?.to_string(),
                secret.resolve(&what("storage_secret_access_key"))?,
            )),
            _ => None,
        };
        let access_token = match &sb.access_token {
            Some(t) => Some(t.resolve(&what("access_token"))?),
            None => None,
        };
        let opts = commands::snapshot_supabase::SupabaseOptions {
            credentials: commands::snapshot_supabase::Credentials {
                db: Some(source_conn(src)?),
                storage,
                access_token,
            },
            stop: Some(Arc::clone(&self.ctx.stop)),
            project: sb.project.resolve()?,
            functions_dir: sb.project.functions_dir.clone(),
            require: commands::snapshot_supabase::Required {
                storage: sb.require_storage,
                functions: sb.require_functions,
            },
            buckets: sb.buckets.clone(),
            exclude_table_data: src.exclude_table_data.clone(),
            count_rows: src.count_rows,
            no_storage: sb.no_storage,
            no_functions: sb.no_functions,
            reread_storage: false,
            connections: repo
                .concurrency()
                .max(crate::repository::open::DEFAULT_CONNECTIONS),
            ca_cert: None,
            retry_deadline: crate::repository::open::DEFAULT_DEADLINE,
            tools: Tools {
                bindir: src.pg_bin_dir.clone(),
            },
            common: self.snapshot_common(),
        };
        Ok(commands::snapshot_supabase::snapshot_supabase(repo, &opts, Default::default())?.view)
    }

    /// A PostgreSQL source's snapshot options.
    pub(super) fn postgres_options(
        &self,
        src: &SourceConfig,
    ) -> Result<commands::snapshot_postgres::PostgresOptions> {
        Ok(commands::snapshot_postgres::PostgresOptions {
            conn: source_conn(src)?,
            databases: src.databases.clone(),
            all_databases: src.all_databases,
            dump: DumpOptions {
                schemas: src.schemas.clone(),
                exclude_tables: src.exclude_tables.clone(),
                exclude_table_data: src.exclude_table_data.clone(),
                count_rows: src.count_rows,
            },
            jobs: src.jobs as usize,
            tools: Tools {
                bindir: src.pg_bin_dir.clone(),
            },
            common: self.snapshot_common(),
            stop: Some(Arc::clone(&self.ctx.stop)),
        })
    }

    pub(super) fn snapshot(&mut self) -> Result<String> {
        let src = self.source()?.clone();
        self.repository(true)?;
        let written_before = self.timed.as_ref().map_or(0.0, |t| t.write_secs());
        let repo = self.repo.as_ref().expect("opened");
        let view = match &src.supabase {
            Some(sb) => self.snapshot_supabase(&src, sb, repo)?,
            None if src.physical => {
                let opts = commands::snapshot_physical::PhysicalOptions {
                    conn: source_conn(&src)?,
                    tools: Tools {
                        bindir: src.pg_bin_dir.clone(),
                    },
                    common: self.snapshot_common(),
                    stop: Some(Arc::clone(&self.ctx.stop)),
                };
                commands::snapshot_physical::snapshot_physical(repo, &opts, Default::default())?
            }
            None => {
                let opts = self.postgres_options(&src)?;
                commands::snapshot_postgres::snapshot_postgres(repo, &opts, Default::default())?
            }
        };
        let upload_secs = self.timed.as_ref().map_or(0.0, |t| t.write_secs()) - written_before;
        let spooled = repo.spool().and_then(|s| s.spooled_because());
        let s = &view.snapshot.summary;
        self.record.snapshot = Some(SnapshotFacts {
            id: view.id.to_hex(),
            time: view.snapshot.time.with_timezone(&Utc),
            bytes_in: s.bytes_in,
            bytes_added: s.bytes_added,
            bytes_added_raw: s.bytes_added_raw,
            blobs_new: s.blobs_new,
            blobs_delta: s.blobs_delta,
            upload_secs,
            spooled: spooled.is_some(),
        });
        if let Some(reason) = spooled {
            return Err(Error::Spooled(format!(
                "snapshot {} is stored in the local spool and not yet uploaded: {reason}",
                view.short_id
            )));
        }
        Ok(format!(
            "snapshot {}: {} read, {} added",
            view.short_id,
            indicatif::HumanBytes(s.bytes_in),
            indicatif::HumanBytes(s.bytes_added)
        ))
    }

    /// What the job's snapshots are labelled with and how they are stored: its tags (and the
    /// one naming the job, which scopes its retention), deltas unless `no_delta`.
    pub(super) fn snapshot_common(&self) -> commands::snapshot::SnapshotCommon {
        commands::snapshot::SnapshotCommon {
            tags: self.job_tags(),
            no_delta: self.job.no_delta,
            compression: self.job.compression,
            ..Default::default()
        }
    }

    /// The job's tags, and the one naming the job that scopes its retention.
    pub(super) fn job_tags(&self) -> Vec<String> {
        let mut tags = self.job.tags.clone();
        tags.push(job_tag(&self.job.name));
        tags
    }

    pub(super) fn forget(&mut self) -> Result<String> {
        let filter = source_filter(self.source()?)?;
        let tags = match self.job.retention_scope {
            RetentionScope::Job => vec![job_tag(&self.job.name)],
            RetentionScope::Source => Vec::new(),
        };
        let opts = commands::forget::ForgetOptions {
            policy: self.job.retention.clone().unwrap_or_default(),
            group_by: commands::forget::DEFAULT_GROUP_BY.to_vec(),
            ids: Vec::new(),
            hosts: vec![Actor::current().host],
            tags,
            source: Some(filter),
            dry_run: false,
        };
        let repo = self.repository(false)?;
        let report = commands::forget::forget(repo, &opts)?;
        let kept: usize = report.groups.iter().map(|g| g.keep.len()).sum();
        Ok(format!(
            "removed {} snapshot(s), kept {kept}",
            report.removed.len()
        ))
    }

    pub(super) fn prune(&mut self) -> Result<String> {
        let opts = commands::prune::PruneOptions {
            max_unused: self.job.prune_max_unused,
            grace: self
                .job
                .prune_grace
                .unwrap_or(commands::prune::DEFAULT_GRACE),
            ..Default::default()
        };
        let repo = self.repository(false)?;
        let r = commands::prune::prune(repo, &opts)?;
        Ok(format!(
            "{} pack(s) marked, {} deleted, {} repacked",
            r.packs_marked, r.packs_deleted, r.packs_repacked
        ))
    }

    pub(super) fn check(&mut self) -> Result<String> {
        let opts = commands::check::CheckOptions {
            read_data: self.job.check_read_data,
        };
        let repo = self.repository(false)?;
        let r = commands::check::check(repo, &opts)?;
        if !r.ok {
            let first = r.errors.first().map_or("", |p| p.message.as_str());
            return Err(Error::Damaged {
                what: "the repository".into(),
                reason: format!(
                    "check found {} problem(s), {} damaged pack(s); first: {first}; run `sbk check` for all",
                    r.errors.len(),
                    r.damaged_packs.len()
                ),
            });
        }
        Ok(format!(
            "{} snapshots, {} packs, read {} of them",
            r.snapshots, r.packs, r.packs_read
        ))
    }

    pub(super) fn drill(&mut self) -> Result<String> {
        let src = self.source()?.clone();
        if src.physical {
            return self.drill_physical(&src);
        }
        let filter = source_filter(&src)?;
        let scratch_url = self.job.drill_scratch.clone().unwrap_or_default();
        let password = match &self.job.drill_password {
            Some(p) => Some(p.resolve(&format!("drill_password of job {}", self.job.name))?),
            None => None,
        };
        let lookup = |var: &str| -> Option<String> {
            match (&password, var) {
                (Some(p), "PGPASSWORD") => Some(p.to_string()),
                _ => process_env(var),
            }
        };
        let scratch = ConnParams::resolve(Some(&scratch_url), &lookup)?;
        let repo = self.repository(false)?;
        let newest = newest_to_drill(repo, &filter, "snapshot", &src.name)?;
        let tools = Tools {
            bindir: src.pg_bin_dir.clone(),
        };
        let out = commands::verify::verify(
            repo,
            &crate::repository::SnapshotRef::Id(newest.0),
            &scratch,
            None,
            1,
            &tools,
        )?;
        let restore_secs: f64 = out.databases.iter().map(|d| d.restore_secs).sum();
        let tables: usize = out.databases.iter().map(|d| d.tables.len()).sum();
        let mismatches: usize = out
            .databases
            .iter()
            .map(|d| d.tables.iter().filter(|t| !t.ok).count())
            .sum();
        self.record.drill = Some(DrillFacts {
            snapshot: out.snapshot.to_hex(),
            ok: out.passed,
            restore_secs,
            tables,
            mismatches,
        });
        if !out.passed {
            let why = out
                .databases
                .iter()
                .find_map(|d| d.error.clone())
                .unwrap_or_else(|| format!("{mismatches} table(s) differ from the manifest"));
            return Err(Error::Source(format!(
                "restore drill of snapshot {} failed: {why}",
                out.snapshot.short()
            )));
        }
        Ok(format!(
            "snapshot {} restored in {restore_secs:.1}s, {tables} tables match",
            out.snapshot.short()
        ))
    }

    /// The drill of the newest base backup of a physical source (see
    /// [`commands::verify_physical`]): restored into a scratch folder, checked against its
    /// manifest, recovered through the whole archive by a private server.
    fn drill_physical(&mut self, src: &SourceConfig) -> Result<String> {
        let filter = source_filter(src)?;
        let r = &self.config.repositories[&self.job.repository];
        let setup = wal_fetch_setup(r)?;
        let repo = self.repository(false)?;
        let newest = newest_to_drill(repo, &filter, "base backup", &src.name)?;
        let opts = commands::verify_physical::PhysicalDrillOptions {
            tools: Tools {
                bindir: src.pg_bin_dir.clone(),
            },
            fetch_command: setup.command,
            scratch_root: None,
            password: Some(setup.password),
            server_env: setup.env,
        };
        let out = commands::verify_physical::verify_physical(
            repo,
            Some(&crate::repository::SnapshotRef::Id(newest.0)),
            &opts,
        );
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                self.record.drill = Some(DrillFacts {
                    snapshot: newest.0.to_hex(),
                    ok: false,
                    restore_secs: 0.0,
                    tables: 0,
                    mismatches: 0,
                });
                return Err(Error::Source(format!(
                    "restore drill of base backup {} failed: {e}",
                    newest.0.short()
                )));
            }
        };
        self.record.drill = Some(DrillFacts {
            snapshot: out.snapshot.to_hex(),
            ok: true,
            restore_secs: out.seconds,
            tables: 0,
            mismatches: 0,
        });
        Ok(format!(
            "base backup {} restored, {}, recovered through the archive to WAL {} in {:.1}s",
            out.snapshot.short(),
            match out.manifest_verified {
                Some(true) => "files match its manifest",
                _ => "no manifest to check",
            },
            out.reached.lsn.as_deref().unwrap_or("?"),
            out.seconds
        ))
    }

    /// Repository size and snapshot count, when the repository could be opened.
    pub(super) fn facts(&mut self) {
        let Some(repo) = &self.repo else { return };
        if let Ok(size) = repo.storage_size() {
            self.record.repository = Some(RepositoryFacts {
                size_bytes: size.pack_bytes,
                snapshots: size.snapshot_files as u64,
                damaged: repo
                    .damage()
                    .iter()
                    .map(|d| format!("{} {}: {} ({})", d.kind, d.id.short(), d.message, d.remedy))
                    .chain(self.disappeared.iter().map(|d| d.describe()))
                    .collect(),
            });
        }
    }
}
