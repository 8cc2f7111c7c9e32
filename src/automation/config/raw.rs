//! The configuration file as written: serde structs that keep every value's span, so a
//! problem is reported at its line and column.

use super::*;

// ---------------------------------------------------------------------------------------------
// The file as written.

/// A secret field: a table naming its source, or (an error) an inline string.
#[derive(Clone, Debug)]
pub(super) enum SecretField {
    Inline,
    Source(SecretSource),
}

impl<'de> Deserialize<'de> for SecretField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretField;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a table { env = \"VAR\" }, { file = \"/path\" } or { command = \"...\" }",
                )
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretField, E> {
                Ok(SecretField::Inline)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SecretField, A::Error> {
                SecretSource::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(SecretField::Source)
            }
        }
        d.deserialize_any(V)
    }
}

/// A schedule field: one cron expression or a list of them.
#[derive(Clone, Debug)]
pub(super) struct OneOrMany(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a cron expression or a list of them")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![s.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(OneOrMany(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// When a step runs: `true` (every run), `false` (never), or a cron expression (when due).
#[derive(Clone, Debug)]
pub(super) enum StepWhenRaw {
    Always(bool),
    Cron(String),
}

impl<'de> Deserialize<'de> for StepWhenRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StepWhenRaw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false, or a cron expression such as \"0 5 * * 0\"")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<StepWhenRaw, E> {
                Ok(StepWhenRaw::Always(b))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StepWhenRaw, E> {
                Ok(StepWhenRaw::Cron(s.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) state_dir: Option<PathBuf>,
    pub(super) log_dir: Option<PathBuf>,
    pub(super) metrics_file: Option<PathBuf>,
    pub(super) metrics_file_readable: Option<bool>,
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    #[serde(default)]
    pub(super) repository: BTreeMap<Spanned<String>, RawRepository>,
    #[serde(default)]
    pub(super) source: BTreeMap<Spanned<String>, RawSource>,
    #[serde(default)]
    pub(super) alert: BTreeMap<Spanned<String>, RawAlert>,
    #[serde(default)]
    pub(super) job: BTreeMap<Spanned<String>, RawJob>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) token: Option<Spanned<SecretField>>,
    pub(super) stop_timeout: Option<Spanned<String>>,
    pub(super) catch_up: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRepository {
    pub(super) url: Spanned<String>,
    pub(super) password: Option<Spanned<SecretField>>,
    pub(super) access_key_id: Option<Spanned<SecretField>>,
    pub(super) secret_access_key: Option<Spanned<SecretField>>,
    pub(super) cache_dir: Option<PathBuf>,
    pub(super) spool_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) no_cache: bool,
    pub(super) s3_connections: Option<Spanned<u16>>,
    pub(super) s3_ca_cert: Option<PathBuf>,
    pub(super) s3_region: Option<String>,
    pub(super) s3_timeout: Option<Spanned<String>>,
    pub(super) retry_deadline: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) insecure: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    #[serde(rename = "type")]
    pub(super) kind: Option<Spanned<String>>,
    /// The database (for `supabase`: optional, derived from `project_url`).
    pub(super) url: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<SecretField>>,
    #[serde(default)]
    pub(super) databases: Vec<String>,
    #[serde(default)]
    pub(super) all_databases: bool,
    #[serde(default)]
    pub(super) schemas: Vec<String>,
    #[serde(default)]
    pub(super) exclude_tables: Vec<String>,
    #[serde(default)]
    pub(super) exclude_table_data: Vec<String>,
    #[serde(default)]
    pub(super) count_rows: bool,
    pub(super) jobs: Option<Spanned<u16>>,
    pub(super) pg_bin_dir: Option<PathBuf>,
    // supabase
    pub(super) project_url: Option<Spanned<String>>,
    pub(super) storage_endpoint: Option<String>,
    pub(super) storage_region: Option<String>,
    pub(super) api_url: Option<String>,
    pub(super) project_ref: Option<String>,
    pub(super) functions_dir: Option<PathBuf>,
    pub(super) buckets: Option<Vec<String>>,
    pub(super) require: Option<Spanned<Vec<String>>>,
    pub(super) no_storage: Option<bool>,
    pub(super) no_functions: Option<bool>,
    pub(super) storage_access_key_id: Option<Spanned<SecretField>>,
    pub(super) storage_secret_access_key: Option<Spanned<SecretField>>,
    pub(super) access_token: Option<Spanned<SecretField>>,
}

impl RawSource {
    /// The fields of a dump (`type = "postgres"`) that are set: a base backup copies the
    /// whole cluster, so they mean nothing there.
    pub(super) fn dump_fields(&self) -> Vec<&'static str> {
        [
            ("databases", !self.databases.is_empty()),
            ("all_databases", self.all_databases),
            ("schemas", !self.schemas.is_empty()),
            ("exclude_tables", !self.exclude_tables.is_empty()),
            ("exclude_table_data", !self.exclude_table_data.is_empty()),
            ("count_rows", self.count_rows),
            ("jobs", self.jobs.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect()
    }

    /// Whether a field only a `supabase` source takes is set.
    pub(super) fn has_supabase_fields(&self) -> bool {
        self.project_url.is_some()
            || self.storage_endpoint.is_some()
            || self.storage_region.is_some()
            || self.api_url.is_some()
            || self.project_ref.is_some()
            || self.functions_dir.is_some()
            || self.buckets.is_some()
            || self.require.is_some()
            || self.no_storage.is_some()
            || self.no_functions.is_some()
            || self.storage_access_key_id.is_some()
            || self.storage_secret_access_key.is_some()
            || self.access_token.is_some()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlert {
    #[serde(rename = "type")]
    pub(super) kind: Spanned<String>,
    // email
    pub(super) server: Option<Spanned<String>>,
    pub(super) port: Option<u16>,
    pub(super) security: Option<SmtpSecurity>,
    pub(super) username: Option<String>,
    pub(super) password: Option<Spanned<SecretField>>,
    pub(super) from: Option<Spanned<String>>,
    pub(super) to: Option<Spanned<Vec<String>>>,
    // webhook
    pub(super) url: Option<Spanned<SecretField>>,
    // both
    pub(super) ca_file: Option<PathBuf>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) on: Option<Spanned<Vec<String>>>,
    pub(super) digest: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) insecure: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub(super) keep_last: Option<Spanned<i64>>,
    pub(super) keep_hourly: Option<Spanned<i64>>,
    pub(super) keep_daily: Option<Spanned<i64>>,
    pub(super) keep_weekly: Option<Spanned<i64>>,
    pub(super) keep_monthly: Option<Spanned<i64>>,
    pub(super) keep_yearly: Option<Spanned<i64>>,
    pub(super) keep_within: Option<Spanned<String>>,
    pub(super) keep_within_hourly: Option<Spanned<String>>,
    pub(super) keep_within_daily: Option<Spanned<String>>,
    pub(super) keep_within_weekly: Option<Spanned<String>>,
    pub(super) keep_within_monthly: Option<Spanned<String>>,
    pub(super) keep_within_yearly: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) keep_tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub(super) source: Option<Spanned<String>>,
    pub(super) repository: Spanned<String>,
    pub(super) schedule: Spanned<OneOrMany>,
    pub(super) snapshot: Option<bool>,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    #[serde(default)]
    pub(super) no_delta: bool,
    pub(super) compression: Option<Spanned<String>>,
    pub(super) retention: Option<Spanned<RawRetention>>,
    pub(super) retention_scope: Option<Spanned<String>>,
    pub(super) prune: Option<Spanned<StepWhenRaw>>,
    pub(super) prune_max_unused: Option<Spanned<String>>,
    pub(super) prune_grace: Option<Spanned<String>>,
    pub(super) check: Option<Spanned<StepWhenRaw>>,
    pub(super) check_read_data: Option<Spanned<String>>,
    pub(super) drill: Option<Spanned<StepWhenRaw>>,
    pub(super) drill_scratch: Option<Spanned<String>>,
    pub(super) drill_password: Option<Spanned<SecretField>>,
    pub(super) max_age: Option<Spanned<String>>,
    pub(super) retries: Option<u32>,
    pub(super) retry_delay: Option<Spanned<String>>,
    pub(super) alerts: Option<Spanned<Vec<String>>>,
    pub(super) wal_lag_alert: Option<Spanned<String>>,
    pub(super) wal_lag_interval: Option<Spanned<String>>,
}
