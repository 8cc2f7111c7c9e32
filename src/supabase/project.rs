//! Where a Supabase project's parts live. From `https://<ref>.supabase.co`:
//! the database `postgresql://postgres@db.<ref>.supabase.co:5432/postgres` (TLS required),
//! Storage's S3 endpoint `<project-url>/storage/v1/s3` and the Management API
//! `https://api.supabase.com` for project `<ref>`. Each can be given instead (a self-hosted
//! project has no ref: its database and endpoints are given, its functions are a folder).

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The Management API of hosted Supabase.
pub const DEFAULT_API_URL: &str = "https://api.supabase.com";

/// A project's parts, as given or derived.
#[derive(Clone, Debug, Default)]
pub struct ProjectSpec {
    /// `https://<ref>.supabase.co`, or a self-hosted project's URL.
    pub project_url: Option<String>,
    /// Database URL (without a password).
    pub db: Option<String>,
    pub storage_endpoint: Option<String>,
    pub storage_region: Option<String>,
    pub api_url: Option<String>,
    /// A project ref for the Management API, when the URL does not say it.
    pub project_ref: Option<String>,
    /// Edge functions from (or to) a folder of `<slug>/` folders instead of the API.
    pub functions_dir: Option<PathBuf>,
}

/// The resolved parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    /// A name for the project in snapshots: its ref, or its URL's host.
    pub name: String,
    pub project_ref: Option<String>,
    pub db: String,
    pub storage_endpoint: Option<String>,
    pub storage_region: String,
    pub api_url: String,
}

/// A project ref: 20 lowercase letters on the hosted platform; accepted more loosely (letters
/// and digits) so that test and self-hosted refs work.
fn valid_ref(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 64
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl ProjectSpec {
    /// Derives what was not given; refuses a malformed project URL and a project with no
    /// database.
    pub fn resolve(&self) -> Result<Project> {
        let mut name = None;
        let mut project_ref = self.project_ref.clone();
        let mut derived_db = None;
        let mut derived_storage = None;
        if let Some(u) = &self.project_url {
            let bad = |why: &str| {
                Error::Invalid(format!(
                    "--project-url {u:?}: {why}; expected https://<ref>.supabase.co (or a \
                     self-hosted project's http[s]://host[:port])"
                ))
            };
            let url = url::Url::parse(u).map_err(|e| bad(&e.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(bad("not an http(s) URL"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(bad("credentials do not belong in the URL"));
            }
            if url.query().is_some()
                || url.fragment().is_some()
                || !url.path().trim_matches('/').is_empty()
            {
                return Err(bad("the URL has a path, query or fragment"));
            }
            let host = url.host_str().ok_or_else(|| bad("no host"))?.to_string();
            let base = u.trim_end_matches('/');
            if let Some(r) = host.strip_suffix(".supabase.co") {
                if !valid_ref(r) || url.scheme() != "https" {
                    return Err(bad(
                        "not a project URL of the form https://<ref>.supabase.co",
                    ));
                }
                project_ref.get_or_insert_with(|| r.to_string());
                derived_db = Some(format!(
                    "postgresql://postgres@db.{r}.supabase.co:5432/postgres?sslmode=require"
                ));
            }
            derived_storage = Some(format!("{base}/storage/v1/s3"));
            name = Some(project_ref.clone().unwrap_or(host));
        }
        if let Some(r) = &project_ref {
            if !valid_ref(r) {
                return Err(Error::Invalid(format!(
                    "project ref {r:?}: expected lowercase letters and digits"
                )));
            }
        }
        let db = self.db.clone().or(derived_db).ok_or_else(|| {
            Error::Invalid(
                "no database: give --project-url https://<ref>.supabase.co or --db URL".into(),
            )
        })?;
        let name = match name.or_else(|| project_ref.clone()) {
            Some(n) => n,
            None => url::Url::parse(&db)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| "local".into()),
        };
        Ok(Project {
            name,
            project_ref,
            db,
            storage_endpoint: self.storage_endpoint.clone().or(derived_storage),
            storage_region: self
                .storage_region
                .clone()
                .unwrap_or_else(|| "us-east-1".into()),
            api_url: self
                .api_url
                .clone()
                .unwrap_or_else(|| DEFAULT_API_URL.into())
                .trim_end_matches('/')
                .to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosted_project_url_gives_every_part() {
        let p = ProjectSpec {
            project_url: Some("https://abcdefghijklmnopqrst.supabase.co".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(p.project_ref.as_deref(), Some("abcdefghijklmnopqrst"));
        assert_eq!(
            p.db,
            "postgresql://postgres@db.abcdefghijklmnopqrst.supabase.co:5432/postgres?sslmode=require"
        );
        assert_eq!(
            p.storage_endpoint.as_deref(),
            Some("https://abcdefghijklmnopqrst.supabase.co/storage/v1/s3")
        );
        assert_eq!(p.api_url, DEFAULT_API_URL);
    }

    #[test]
    fn malformed_urls_are_refused() {
        for u in [
            "abc",
            "ftp://x.supabase.co",
            "https://user:pw@abc.supabase.co",
            "http://abc.supabase.co",
            "https://ABC.supabase.co/x",
            "https://a_b.supabase.co",
            "https://abc.supabase.co/rest/v1",
        ] {
            let r = ProjectSpec {
                project_url: Some(u.into()),
                ..Default::default()
            }
            .resolve();
            assert!(r.is_err(), "{u}");
        }
    }

    #[test]
    fn overrides_win_and_a_database_is_required() {
        let p = ProjectSpec {
            project_url: Some("http://localhost:8000".into()),
            db: Some("postgresql://postgres@127.0.0.1:5432/postgres".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(p.name, "localhost");
        assert_eq!(
            p.storage_endpoint.as_deref(),
            Some("http://localhost:8000/storage/v1/s3")
        );
        assert!(ProjectSpec {
            project_url: Some("http://localhost:8000".into()),
            ..Default::default()
        }
        .resolve()
        .is_err());
    }
}
