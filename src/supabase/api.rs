//! The Supabase Management API (`https://api.supabase.com/v1/...`), for what lives outside the
//! database: edge functions (metadata and source files), secret names, and the project's auth,
//! PostgREST and storage settings. Authenticated by `SUPABASE_ACCESS_TOKEN` (a bearer token that
//! never appears in a message).
//!
//! Throttling (HTTP 429) waits as long as `Retry-After` (or `X-RateLimit-Reset`) says, at most a
//! minute at a time; 5xx and lost connections are retried with jittered backoff; all until a
//! deadline. Function source comes as `multipart/form-data` (`Accept: multipart/form-data` on
//! `GET .../functions/{slug}/body`): a JSON part with the entrypoint, and a part per file whose
//! path is its `Supabase-Path` header or its file name, as the Supabase CLI reads it.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::backend::retry::jittered_backoff;
use crate::error::{Error, Result};

/// The variable the access token comes from.
pub const TOKEN_VAR: &str = "SUPABASE_ACCESS_TOKEN";
/// Longest single wait for a throttled request.
const MAX_THROTTLE_WAIT: Duration = Duration::from_secs(60);
/// Largest response read (a function's source files).
const MAX_BODY: usize = 256 << 20;

/// A function as the API lists it; other fields are kept as they came.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FunctionInfo {
    pub slug: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: i64,
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_jwt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_map_path: Option<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// A function's source: the entrypoint and the files, paths relative to the entrypoint's
/// folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionSource {
    pub entrypoint: Option<String>,
    pub files: Vec<(String, Vec<u8>)>,
}

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A Management API client for one project.
pub struct ApiClient {
    rt: tokio::runtime::Runtime,
    client: HttpsClient,
    base: String,
    project_ref: String,
    token: zeroize::Zeroizing<String>,
    deadline: Duration,
    timeout: Duration,
    /// Requests answered 429 and waited for (for reports and tests).
    pub throttled: std::sync::atomic::AtomicU64,
}

/// An API failure: permanent unless `transient`.
struct Failure {
    transient: bool,
    wait: Option<Duration>,
    status: u16,
    message: String,
}

impl ApiClient {
    /// A client for `project_ref` at `base` (`https://api.supabase.com`), with the token.
    pub fn new(
        base: &str,
        project_ref: &str,
        token: zeroize::Zeroizing<String>,
        ca_cert: Option<&std::path::Path>,
        deadline: Duration,
    ) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start the API client: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        if let Some(ca) = ca_cert {
            let pem = std::fs::read(ca).map_err(|e| Error::io("read CA certificate", ca, e))?;
            for c in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let c: rustls::pki_types::CertificateDer<'static> = c.map_err(|e| {
                    Error::Invalid(format!("{}: not a PEM certificate: {e}", ca.display()))
                })?;
                roots
                    .add(c)
                    .map_err(|e| Error::Invalid(format!("{}: {e}", ca.display())))?;
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Invalid(format!("TLS set-up: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let parsed = url::Url::parse(base)
            .map_err(|e| Error::Invalid(format!("--api-url {base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::Invalid(format!(
                "--api-url {base:?}: expected an http(s) URL"
            )));
        }
        Ok(ApiClient {
            rt,
            client,
            base: base.trim_end_matches('/').to_string(),
            project_ref: project_ref.to_string(),
            token,
            deadline,
            timeout: Duration::from_secs(60),
            throttled: Default::default(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/projects/{}{path}", self.base, self.project_ref)
    }

    async fn exchange(
        &self,
        method: hyper::Method,
        path: &str,
        accept: &str,
        body: Option<(String, Vec<u8>)>,
    ) -> std::result::Result<(hyper::HeaderMap, Bytes), Failure> {
        let url = self.url(path);
        let mut req = hyper::Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", &*self.token),
            )
            .header(hyper::header::ACCEPT, accept)
            .header(
                hyper::header::USER_AGENT,
                concat!("sbk/", env!("CARGO_PKG_VERSION")),
            );
        let payload = match body {
            Some((content_type, bytes)) => {
                req = req.header(hyper::header::CONTENT_TYPE, content_type);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let what = format!("Supabase API {method} {path}");
        let req = req.body(Full::new(payload)).map_err(|e| Failure {
            transient: false,
            wait: None,
            status: 0,
            message: format!("{what}: {e}"),
        })?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| Failure {
                transient: true,
                wait: None,
                status: 0,
                message: format!("{what}: cannot reach {}: {}", self.base, chain(&e)),
            })?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| Failure {
                    transient: true,
                    wait: None,
                    status: status.as_u16(),
                    message: format!("{what}: connection lost: {e}"),
                })?
                .to_bytes();
            if status.is_success() {
                return Ok((headers, body));
            }
            let detail = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| {
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                        .trim()
                        .to_string()
                });
            let code = status.as_u16();
            let message = match code {
                401 => format!("{what}: the API refused the token (HTTP 401); check {TOKEN_VAR}"),
                403 => format!(
                    "{what}: the token may not access project {} (HTTP 403): {detail}",
                    self.project_ref
                ),
                404 => format!("{what}: not found (HTTP 404): {detail}"),
                _ => format!("{what}: HTTP {code}: {detail}"),
            };
            let wait = (code == 429).then(|| retry_after(&headers));
            Err(Failure {
                transient: code == 429 || code >= 500 || code == 408,
                wait: wait.flatten(),
                status: code,
                message,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Failure {
                transient: true,
                wait: None,
                status: 0,
                message: format!("{what}: no answer in {} s", self.timeout.as_secs()),
            }),
        }
    }

    /// One request with retries; `Ok(None)` for a 404.
    fn request(
        &self,
        method: hyper::Method,
        path: &str,
        accept: &str,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<Option<(hyper::HeaderMap, Bytes)>> {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            match self
                .rt
                .block_on(self.exchange(method.clone(), path, accept, body.clone()))
            {
                Ok(r) => return Ok(Some(r)),
                Err(f) if f.status == 404 => return Ok(None),
                Err(f) if f.transient => {
                    attempt += 1;
                    if f.status == 429 {
                        self.throttled
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let wait = f
                        .wait
                        .map(|w| w.min(MAX_THROTTLE_WAIT))
                        .unwrap_or_else(|| jittered_backoff(attempt));
                    if start.elapsed() + wait >= self.deadline {
                        return Err(Error::Source(format!(
                            "{} (gave up after {attempt} attempts)",
                            f.message
                        )));
                    }
                    std::thread::sleep(wait);
                }
                Err(f) => return Err(Error::Source(f.message)),
            }
        }
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let Some((_, body)) = self.request(hyper::Method::GET, path, "application/json", None)?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| Error::Source(format!("Supabase API GET {path}: unexpected answer: {e}")))
    }

    /// The project's functions; also the check that the token works.
    pub fn list_functions(&self) -> Result<Vec<FunctionInfo>> {
        Ok(self.get_json("/functions")?.unwrap_or_default())
    }

    /// A function's source files; `None` when the function is gone.
    pub fn function_source(&self, slug: &str) -> Result<Option<FunctionSource>> {
        let path = format!("/functions/{slug}/body");
        let Some((headers, body)) =
            self.request(hyper::Method::GET, &path, "multipart/form-data", None)?
        else {
            return Ok(None);
        };
        let content_type = headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let boundary = multer::parse_boundary(content_type).map_err(|_| {
            Error::Source(format!(
                "Supabase API GET {path}: expected a multipart answer, got {content_type:?} \
                 (an API that only returns eszip bundles is not supported)"
            ))
        })?;
        self.rt
            .block_on(parse_source(body, boundary))
            .map(Some)
            .map_err(|e| Error::Source(format!("Supabase API GET {path}: {e}")))
    }

    /// Deploys a function from its files (`POST /functions/deploy?slug=`).
    pub fn deploy_function(
        &self,
        slug: &str,
        metadata: &serde_json::Value,
        files: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let boundary = format!("sbk-{:016x}", rand_u64());
        let body = multipart_body(&boundary, metadata, files);
        let path = format!("/functions/deploy?slug={slug}");
        self.request(
            hyper::Method::POST,
            &path,
            "application/json",
            Some((format!("multipart/form-data; boundary={boundary}"), body)),
        )?
        .ok_or_else(|| Error::NotFound(format!("Supabase API POST {path}: not found")))?;
        Ok(())
    }

    /// The names of the project's secrets (their values cannot be read).
    pub fn secret_names(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Secret {
            name: String,
        }
        let list: Vec<Secret> = self.get_json("/secrets")?.unwrap_or_default();
        Ok(list.into_iter().map(|s| s.name).collect())
    }

    /// A settings document (`/config/auth`, `/postgrest`, `/config/storage`); `None` when the
    /// API has no such endpoint.
    pub fn settings(&self, path: &str) -> Result<Option<serde_json::Value>> {
        self.get_json(path)
    }
}

/// `Retry-After` in seconds (or `X-RateLimit-Reset`, which the API sends on every answer).
fn retry_after(h: &hyper::HeaderMap) -> Option<Duration> {
    ["retry-after", "x-ratelimit-reset"]
        .iter()
        .find_map(|name| {
            h.get(*name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
        })
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn rand_u64() -> u64 {
    use chacha20poly1305::aead::rand_core::RngCore;
    chacha20poly1305::aead::OsRng.next_u64()
}

/// A `multipart/form-data` body: the `metadata` JSON part, then a `file` part per file.
pub fn multipart_body(
    boundary: &str,
    metadata: &serde_json::Value,
    files: &[(String, Vec<u8>)],
) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\
             Content-Type: application/json\r\n\r\n{metadata}\r\n"
        )
        .as_bytes(),
    );
    for (path, data) in files {
        let escaped = path.replace('\\', "\\\\").replace('"', "\\\"");
        b.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
                 filename=\"{escaped}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    b
}

/// Reads a function body answer: a JSON part (`deno2_entrypoint_path`) and file parts.
async fn parse_source(
    body: Bytes,
    boundary: String,
) -> std::result::Result<FunctionSource, String> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut out = FunctionSource::default();
    let mut raw = Vec::new();
    while let Some(field) = form.next_field().await.map_err(|e| e.to_string())? {
        let path = field
            .headers()
            .get("supabase-path")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| field.file_name().map(str::to_string));
        let data = field.bytes().await.map_err(|e| e.to_string())?;
        match path {
            Some(p) => raw.push((p, data.to_vec())),
            None => {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) {
                    out.entrypoint = v
                        .get("deno2_entrypoint_path")
                        .or_else(|| v.get("entrypoint_path"))
                        .and_then(|e| e.as_str())
                        .map(str::to_string);
                }
            }
        }
    }
    // Paths relative to the entrypoint's folder (`source/index.ts` -> `index.ts`).
    let root = out
        .entrypoint
        .as_deref()
        .map(|e| e.trim_start_matches("file://"))
        .and_then(|e| e.rsplit_once('/').map(|(d, _)| format!("{d}/")))
        .unwrap_or_default();
    for (p, data) in raw {
        let rel = p
            .trim_start_matches("file://")
            .strip_prefix(root.as_str())
            .unwrap_or(&p)
            .trim_start_matches('/')
            .to_string();
        if rel.is_empty() || rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(format!("a file part has an unsafe path {p:?}"));
        }
        out.files.push((rel, data));
    }
    if let Some(e) = &out.entrypoint {
        let trimmed = e.trim_start_matches("file://");
        out.entrypoint = Some(
            trimmed
                .strip_prefix(root.as_str())
                .unwrap_or(trimmed)
                .to_string(),
        );
    }
    out.files.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_parts_round_trip_through_the_deploy_encoding() {
        let files = vec![
            ("index.ts".to_string(), b"export default 1;\n".to_vec()),
            (
                "lib/util.ts".to_string(),
                b"x\r\n--not-a-boundary\r\n".to_vec(),
            ),
        ];
        let meta = serde_json::json!({"deno2_entrypoint_path": "index.ts"});
        let body = multipart_body("b0undary", &meta, &files);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let src = rt
            .block_on(parse_source(Bytes::from(body), "b0undary".into()))
            .unwrap();
        assert_eq!(src.entrypoint.as_deref(), Some("index.ts"));
        assert_eq!(src.files, files);
    }

    #[test]
    fn throttle_waits_come_from_the_headers() {
        let mut h = hyper::HeaderMap::new();
        h.insert("x-ratelimit-reset", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after", "1".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(1)));
    }
}
