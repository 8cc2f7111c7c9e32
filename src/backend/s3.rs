//! S3 and MinIO on aws-sdk-s3: repository URL `s3:http[s]://host[:port]/bucket[/prefix]`.
//!
//! - Path-style addressing (`host/bucket/key`, what MinIO expects) for custom endpoints;
//!   virtual-hosted style only for `*.amazonaws.com`.
//! - Credentials from the standard chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
//!   `AWS_PROFILE` and the shared files, web identity, container and instance roles); never
//!   from the URL, and never in a message.
//! - Every write is conditional (`If-None-Match: *`): a stored file is never overwritten. A
//!   412 on a content-addressed name means the same bytes are already there; on `config` it
//!   means a repository exists.
//! - Uploads carry a CRC32 checksum that the server verifies, and no SigV4 payload hash
//!   (`UNSIGNED-PAYLOAD`, the headers stay signed): SHA-256 over every byte, on both sides, would
//!   guard nothing that reads do not already expose, since every stored file is authenticated
//!   by its own encryption or content hash when read, and GET responses are never signed. Files above
//!   [`S3Backend::multipart_threshold`] go up as a multipart upload, parts in parallel.
//! - The SDK's own retries are off: [`super::retry::RetryBackend`] retries transient failures
//!   with one policy and one deadline for every backend.
//!
//! The trait is blocking; each call runs on this backend's own Tokio runtime, and several
//! threads may call at once.
//!
//! One file (~800 lines) on purpose: it is one client, and its parts (URL parsing, the
//! credential chain, the runtime, multipart uploads, the mapping of SDK errors to
//! [`super::ErrorKind`]) only make sense together; split, each would be a fragment of
//! `S3Backend`'s state.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart,
    CreateBucketConfiguration, DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled,
    ObjectLockRetention, ObjectLockRetentionMode, ObjectLockRule,
};
use aws_sdk_s3::Client;
use tokio::sync::Semaphore;

use super::lock::{LockMode, LockPolicy, LockStatus, Version};
use super::RemoteOptions;
use super::{
    check_name, relative_path, BResult, Backend, BackendError, ErrorKind, FileInfo, FileType,
};

/// Requests in flight at once unless `--s3-connections` says otherwise.
pub const DEFAULT_CONNECTIONS: usize = 8;
/// Files larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: u64 = 32 << 20;
/// Size of each part of a multipart upload (S3's minimum is 5 MiB, except the last).
pub const PART_SIZE: u64 = 8 << 20;
const REGION_DEFAULT: &str = "us-east-1";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A response that sends nothing for this long is a stalled connection: retried.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// An access key and its secret, given directly rather than found by the standard chain.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticCredentials({}, <secret>)", self.access_key_id)
    }
}

/// The parts of an `s3:` repository URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    /// `http[s]://host[:port]`
    pub endpoint: String,
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3:http[s]://host[:port]/bucket[/prefix]`.
    pub fn parse(url_text: &str) -> Result<Self, String> {
        // Messages never repeat a user:password@ part.
        let shown = match url_text.rfind('@') {
            Some(i) => format!("s3:...{}", &url_text[i..]),
            None => url_text.to_string(),
        };
        let s = shown.as_str();
        let rest = url_text
            .strip_prefix("s3:")
            .ok_or_else(|| format!("{s}: an S3 repository URL starts with s3:"))?;
        let url = url::Url::parse(rest)
            .map_err(|e| format!("{s}: expected s3:http[s]://host[:port]/bucket[/prefix] ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{s}: the endpoint must be http:// or https://"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{s}: credentials do not belong in the URL; set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{s}: unexpected ? or # in the URL"));
        }
        let host = url
            .host_str()
            .ok_or_else(|| format!("{s}: no host in the URL"))?;
        let endpoint = match url.port() {
            Some(p) => format!("{}://{host}:{p}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        };
        let mut parts = url.path().trim_matches('/').splitn(2, '/');
        let bucket = parts.next().unwrap_or("").to_string();
        if bucket.is_empty() {
            return Err(format!("{s}: no bucket in the URL"));
        }
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            return Err(format!(
                "{s}: {bucket:?} is not a valid bucket name (3 to 63 lowercase letters, digits, \
                 dots and hyphens, starting and ending with a letter or digit)"
            ));
        }
        let prefix = parts.next().unwrap_or("").trim_matches('/').to_string();
        Ok(S3Url {
            endpoint,
            bucket,
            prefix,
        })
    }

    fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3:{}/{}", self.endpoint, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// A repository in an S3 bucket (see the module documentation).
pub struct S3Backend {
    rt: tokio::runtime::Runtime,
    client: Client,
    url: S3Url,
    region: String,
    connections: usize,
    /// Files above this size are uploaded in parts of [`S3Backend::part_size`].
    pub multipart_threshold: u64,
    pub part_size: u64,
}

impl S3Backend {
    /// Requests this client keeps in flight at once.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Prepares a client for `url`; nothing is sent until the first call.
    pub fn open(url: &str, opts: &RemoteOptions) -> Result<Self, crate::Error> {
        let url = S3Url::parse(url).map_err(crate::Error::Invalid)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sbk-s3")
            .enable_all()
            .build()
            .map_err(|e| crate::Error::Invalid(format!("cannot start the S3 client: {e}")))?;
        let region = RegionProviderChain::first_try(opts.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::new(REGION_DEFAULT));
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region);
        if let Some(c) = &opts.credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.to_string(),
                None,
                None,
                "sbk",
            ));
        }
        if let Some(ca) = &opts.ca_cert {
            loader = loader.http_client(https_client_with_ca(ca)?);
        }
        let sdk = rt.block_on(loader.load());
        let region = sdk
            .region()
            .map_or(REGION_DEFAULT.to_string(), |r| r.to_string());
        let virtual_hosted = url
            .endpoint
            .split("://")
            .nth(1)
            .is_some_and(|h| h.ends_with(".amazonaws.com"));
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .endpoint_url(&url.endpoint)
            .force_path_style(!virtual_hosted)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(opts.io_timeout)
                    .build(),
            )
            .build();
        Ok(S3Backend {
            rt,
            client: Client::from_conf(conf),
            url,
            region,
            connections: opts.connections.max(1),
            multipart_threshold: MULTIPART_THRESHOLD,
            part_size: PART_SIZE,
        })
    }

    fn key(&self, t: FileType, name: &str) -> String {
        self.url.key(&relative_path(t, name))
    }

    /// Where a failed request went, for messages: bucket and endpoint, never credentials.
    fn err<E>(
        &self,
        op: &str,
        key: &str,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().map(str::to_string);
        let message = e.message().map(str::to_string);
        let (kind, reason) = classify(&e, status, code.as_deref(), message.as_deref());
        let object = if key.is_empty() {
            String::new()
        } else {
            format!(" {key}")
        };
        BackendError::new(
            kind,
            format!(
                "S3 {op}{object} in bucket {} at {}: {reason}",
                self.url.bucket, self.url.endpoint
            ),
        )
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), PutError> {
        self.client
            .put_object()
            .bucket(&self.url.bucket)
            .key(key)
            .if_none_match("*")
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(body))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map(|_| ())
            .map_err(|e| PutError(self.err("upload", key, e)))
    }

    /// Uploads the file at `path` in parts, [`S3Backend::connections`] at a time; the upload is
    /// aborted on failure, so no parts are left behind.
    async fn put_multipart(&self, key: &str, path: &Path, size: u64) -> Result<(), PutError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.url.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| PutError(self.err("start multipart upload of", key, e)))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = self.upload_parts(key, &upload_id, path, size).await;
        let result = match result {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.url.bucket)
                .key(key)
                .upload_id(&upload_id)
                .if_none_match("*")
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| PutError(self.err("complete multipart upload of", key, e))),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.url.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        size: u64,
    ) -> Result<Vec<CompletedPart>, PutError> {
        let limit = Arc::new(Semaphore::new(self.connections));
        let count = size.div_ceil(self.part_size).max(1);
        let mut tasks = Vec::new();
        let mut unreadable = None;
        for n in 0..count {
            let permit = Arc::clone(&limit)
                .acquire_owned()
                .await
                .expect("semaphore open");
            let offset = n * self.part_size;
            let len = self.part_size.min(size - offset);
            let data = match read_part(path, offset, len) {
                Ok(d) => d,
                Err(e) => {
                    unreadable = Some(e);
                    break;
                }
            };
            let req = self
                .client
                .upload_part()
                .bucket(&self.url.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(n as i32 + 1)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(data))
                .customize()
                .disable_payload_signing();
            tasks.push(tokio::spawn(async move {
                let r = req.send().await;
                drop(permit);
                r
            }));
        }
        // Every started part is awaited, failed or not, so that an abort below comes after the
        // last part and leaves nothing behind.
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(task.await);
        }
        if let Some(e) = unreadable {
            return Err(PutError(e));
        }
        let mut parts = Vec::with_capacity(results.len());
        for (n, result) in results.into_iter().enumerate() {
            let out = result
                .map_err(|e| {
                    PutError(BackendError::new(
                        ErrorKind::Transient,
                        format!("S3 upload of part {} of {key}: {e}", n + 1),
                    ))
                })?
                .map_err(|e| PutError(self.err("upload a part of", key, e)))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(n as i32 + 1)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                    .build(),
            );
        }
        Ok(parts)
    }

    /// Stores `key` unless it exists; a 412 is success for a content-addressed file.
    fn finish_put(
        &self,
        t: FileType,
        key: &str,
        config_bytes: Option<&[u8]>,
        r: Result<(), PutError>,
    ) -> BResult<()> {
        match r {
            Err(PutError(e)) if e.kind == ErrorKind::AlreadyExists => {
                // Our own earlier attempt may have landed before its answer was lost.
                let ours = || {
                    self.rt
                        .block_on(self.get(key, None))
                        .is_ok_and(|b| Some(b) == config_bytes.map(<[u8]>::to_vec))
                };
                if t == FileType::Config && !ours() {
                    Err(BackendError::new(
                        ErrorKind::AlreadyExists,
                        format!("{} already holds a repository", self.url),
                    ))
                } else {
                    // Named by the hash of its bytes (or our own config): already stored.
                    Ok(())
                }
            }
            Err(PutError(e)) => Err(e),
            // A server whose conditional PUT is not atomic (s3s-fs lets several of 16
            // simultaneous writers succeed) may have let another host's config land too: what
            // is stored must be ours. Narrows that window; atomic servers never need it.
            Ok(()) if t == FileType::Config && config_bytes.is_some() => {
                match self.rt.block_on(self.get(key, None)) {
                    Ok(stored) if Some(stored.as_slice()) == config_bytes => Ok(()),
                    Ok(_) => Err(BackendError::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "{} already holds a repository (another host created one at the same \
                         moment)",
                            self.url
                        ),
                    )),
                    Err(e) => Err(e),
                }
            }
            Ok(()) => Ok(()),
        }
    }

    async fn get(&self, key: &str, range: Option<String>) -> BResult<Vec<u8>> {
        let out = self
            .client
            .get_object()
            .bucket(&self.url.bucket)
            .key(key)
            .set_range(range)
            .send()
            .await
            .map_err(|e| self.err("read", key, e))?;
        let body = out.body.collect().await.map_err(|e| {
            BackendError::new(
                ErrorKind::Transient,
                format!(
                    "S3 read {key} in bucket {} at {}: connection lost: {}",
                    self.url.bucket,
                    self.url.endpoint,
                    source_chain(&e)
                ),
            )
        })?;
        Ok(body.into_bytes().to_vec())
    }

    /// Creates the bucket unless it exists; `object_lock` creates it with Object Lock (which S3
    /// turns on only at creation).
    async fn create_bucket_if_missing(&self, object_lock: bool) -> BResult<()> {
        let head = self
            .client
            .head_bucket()
            .bucket(&self.url.bucket)
            .send()
            .await;
        match head {
            Ok(_) => return Ok(()),
            Err(e) => {
                let e = self.err("check", "", e);
                if e.kind != ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
        let mut req = self.client.create_bucket().bucket(&self.url.bucket);
        if object_lock {
            req = req.object_lock_enabled_for_bucket(true);
        }
        if self.region != REGION_DEFAULT {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou")) => Ok(()),
            Err(e) => {
                let e = self.err("create bucket", "", e);
                Err(BackendError::new(
                    e.kind,
                    format!(
                        "bucket {} does not exist and could not be created: {}",
                        self.url.bucket, e.message
                    ),
                ))
            }
        }
    }

    /// Keys under `prefix` with their sizes and LastModified times.
    async fn list_keys(&self, prefix: &str, max: Option<i32>) -> BResult<Vec<ListedKey>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.url.bucket)
            .prefix(prefix)
            .set_max_keys(max)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("list", prefix, e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    let modified = o.last_modified().map(|t| {
                        std::time::UNIX_EPOCH
                            + std::time::Duration::new(t.secs().max(0) as u64, t.subsec_nanos())
                    });
                    out.push((k.to_string(), o.size().unwrap_or(0).max(0) as u64, modified));
                }
            }
            if max.is_some_and(|m| out.len() >= m as usize) {
                break;
            }
        }
        Ok(out)
    }
}

/// A listed key, its size and LastModified.
type ListedKey = (String, u64, Option<std::time::SystemTime>);

impl S3Backend {
    async fn lock_configuration(&self) -> BResult<LockStatus> {
        let out = match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.url.bucket)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if matches!(e.code(), Some("ObjectLockConfigurationNotFoundError")) => {
                return Ok(LockStatus {
                    enabled: false,
                    default: None,
                })
            }
            Err(e) => return Err(self.err("read the Object Lock configuration of", "", e)),
        };
        let conf = out.object_lock_configuration();
        let enabled =
            conf.and_then(|c| c.object_lock_enabled()) == Some(&ObjectLockEnabled::Enabled);
        let default = conf
            .and_then(|c| c.rule())
            .and_then(|r| r.default_retention())
            .and_then(|d| {
                let mode = match d.mode()? {
                    ObjectLockRetentionMode::Compliance => LockMode::Compliance,
                    ObjectLockRetentionMode::Governance => LockMode::Governance,
                    _ => return None,
                };
                let days = d
                    .days()
                    .or_else(|| d.years().map(|y| y.saturating_mul(365)))?;
                Some(LockPolicy {
                    mode,
                    days: days.max(0) as u32,
                })
            });
        Ok(LockStatus { enabled, default })
    }

    /// Lists every version and delete marker under the repository's prefix.
    async fn list_versions(&self) -> BResult<Vec<Version>> {
        let root = self.url.key("");
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.url.bucket)
                .prefix(&root)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.err("list versions under", &root, e))?;
            let file = |key: Option<&str>| {
                let rel = key?.strip_prefix(root.as_str())?;
                super::parse_relative(rel)
            };
            let when = |d: Option<&aws_sdk_s3::primitives::DateTime>| {
                d.and_then(|d| chrono::DateTime::from_timestamp(d.secs(), d.subsec_nanos()))
                    .unwrap_or_default()
            };
            for v in page.versions() {
                if let Some((t, name)) = file(v.key()) {
                    out.push(Version {
                        t,
                        name,
                        id: v.version_id().unwrap_or("null").to_string(),
                        modified: when(v.last_modified()),
                        latest: v.is_latest().unwrap_or(false),
                        deleted: false,
                        size: v.size().unwrap_or(0).max(0) as u64,
                        etag: v.e_tag().unwrap_or_default().to_string(),
                    });
                }
            }
            for m in page.delete_markers() {
                if let Some((t, name)) = file(m.key()) {
                    out.push(Version {
                        t,
                        name,
                        id: m.version_id().unwrap_or("null").to_string(),
                        modified: when(m.last_modified()),
                        latest: m.is_latest().unwrap_or(false),
                        deleted: true,
                        size: 0,
                        etag: String::new(),
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() && version_marker.is_none() {
                break;
            }
        }
        // Grouped per file, each file's versions in the server's order (newest first), then
        // its delete markers: times alone cannot order them (whole seconds, and a copy may
        // keep its source's time on some servers).
        out.sort_by(|a, b| (a.t.dirname(), &a.name).cmp(&(b.t.dirname(), &b.name)));
        Ok(out)
    }
}

impl S3Backend {
    /// The files of type `t` whose keys start with `rel_prefix` (relative to the repository).
    fn list_under(&self, t: FileType, rel_prefix: &str) -> BResult<Vec<FileInfo>> {
        let keys = self
            .rt
            .block_on(self.list_keys(&self.url.key(rel_prefix), None))?;
        Ok(keys
            .into_iter()
            .filter_map(|(k, size, modified)| {
                let name = k.rsplit('/').next()?.to_string();
                // Only names this layout would give the file (packs fan out by 2 hex digits).
                (self.key(t, &name) == k && !name.is_empty()).then_some(FileInfo {
                    name,
                    size,
                    modified,
                })
            })
            .collect())
    }
}

/// The SDK's name for a lock mode.
fn sdk_mode(mode: LockMode) -> ObjectLockRetentionMode {
    match mode {
        LockMode::Compliance => ObjectLockRetentionMode::Compliance,
        LockMode::Governance => ObjectLockRetentionMode::Governance,
    }
}

/// A failed upload, before [`S3Backend::finish_put`] decides what a 412 means.
struct PutError(BackendError);

fn read_part(path: &Path, offset: u64, len: u64) -> BResult<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let fail = |e: std::io::Error| {
        BackendError::new(
            ErrorKind::Permanent,
            format!("read staged file {}: {e}", path.display()),
        )
    };
    let mut f = std::fs::File::open(path).map_err(fail)?;
    f.seek(SeekFrom::Start(offset)).map_err(fail)?;
    let mut buf = vec![0; len as usize];
    f.read_exact(&mut buf).map_err(fail)?;
    Ok(buf)
}

/// An error and its causes, one line: `dispatch failure: io error: connection refused`,
/// without the debug dumps of the SDK's own display.
pub(crate) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// The kind of a failed request and what to tell the user.
pub(crate) fn classify<E, R>(
    e: &SdkError<E, R>,
    status: Option<u16>,
    code: Option<&str>,
    message: Option<&str>,
) -> (ErrorKind, String)
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let detail = || source_chain(e);
    match e {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            let mut what = code.map_or_else(
                || format!("HTTP {}", status.unwrap_or(0)),
                |c| format!("{c} (HTTP {})", status.unwrap_or(0)),
            );
            if let Some(m) = message.filter(|m| !m.is_empty()) {
                what = format!("{what}: {m}");
            }
            match (status, code) {
                (_, Some("NoSuchBucket")) => (
                    ErrorKind::Permanent,
                    "the bucket does not exist (sbk init creates it)".into(),
                ),
                (Some(404), _) | (_, Some("NoSuchKey" | "NotFound")) => {
                    (ErrorKind::NotFound, "not found".into())
                }
                (Some(412), _) | (_, Some("PreconditionFailed")) => {
                    (ErrorKind::AlreadyExists, "already exists".into())
                }
                (_, Some("InvalidAccessKeyId" | "SignatureDoesNotMatch")) | (Some(401), _) => (
                    ErrorKind::Permanent,
                    format!(
                        "{what}: the server rejected the credentials; check \
                         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
                    ),
                ),
                (Some(403), _) => (
                    ErrorKind::Permanent,
                    format!("{what}: access denied; check the credentials and the bucket policy"),
                ),
                (_, Some("ConditionalRequestConflict" | "OperationAborted")) => {
                    (ErrorKind::Transient, what)
                }
                (Some(s), _) if s == 429 || s >= 500 || s == 408 => (ErrorKind::Transient, what),
                // Bytes damaged or cut on the way: sending them again cures it.
                (
                    _,
                    Some(
                        "SlowDown"
                        | "RequestTimeout"
                        | "InternalError"
                        | "BadDigest"
                        | "XAmzContentChecksumMismatch"
                        | "IncompleteBody",
                    ),
                ) => (ErrorKind::Transient, what),
                // A response that could not be read (cut short, garbled) is not the server's
                // verdict: retried, unless its status says the request itself was wrong.
                (Some(s), _)
                    if matches!(e, SdkError::ResponseError(_)) && !(400..500).contains(&s) =>
                {
                    (ErrorKind::Transient, what)
                }
                (None, _) => (ErrorKind::Transient, detail()),
                _ => (ErrorKind::Permanent, what),
            }
        }
        SdkError::TimeoutError(_) => (ErrorKind::Transient, "timed out".into()),
        SdkError::DispatchFailure(d) => {
            let text = detail();
            let timed_out =
                d.is_timeout() || text.contains("timed out") || text.contains("timeout");
            if !timed_out && (text.contains("credentials") || d.is_user()) {
                (
                    ErrorKind::Permanent,
                    format!(
                        "no usable S3 credentials: set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) ({text})"
                    ),
                )
            } else if text.contains("certificate") || text.contains("UnknownIssuer") {
                (
                    ErrorKind::Permanent,
                    format!("TLS: the server's certificate is not trusted; pass its CA with --s3-ca-cert ({text})"),
                )
            } else {
                (
                    ErrorKind::Transient,
                    format!("cannot reach the server: {text}"),
                )
            }
        }
        _ => {
            let text = detail();
            if text.contains("credentials") {
                (
                    ErrorKind::Permanent,
                    format!(
                        "no usable S3 credentials: set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) ({text})"
                    ),
                )
            } else {
                (ErrorKind::Permanent, text)
            }
        }
    }
}

/// An HTTPS client that also trusts the PEM certificate(s) in `ca`.
pub(crate) fn https_client_with_ca(
    ca: &Path,
) -> Result<aws_sdk_s3::config::SharedHttpClient, crate::Error> {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
    let pem = std::fs::read(ca).map_err(|e| crate::Error::io("read CA certificate", ca, e))?;
    let ctx = TlsContext::builder()
        .with_trust_store(TrustStore::default().with_pem_certificate(pem))
        .build()
        .map_err(|e| {
            crate::Error::Invalid(format!(
                "{}: not a usable CA certificate: {e}",
                ca.display()
            ))
        })?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(ctx)
        .build_https())
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.url.to_string()
    }

    fn create(&self) -> BResult<()> {
        self.rt.block_on(async {
            self.create_bucket_if_missing(false).await?;
            let root = self.url.key("");
            let found = self.list_keys(&root, Some(1)).await?;
            if let Some((k, _, _)) = found.first() {
                return Err(BackendError::new(
                    ErrorKind::AlreadyExists,
                    format!("{} is not empty (it holds {k})", self.url),
                ));
            }
            Ok(())
        })
    }

    fn list_prefix(&self, t: FileType, prefix: &str) -> BResult<Vec<FileInfo>> {
        // Fan-out folders (packs) are listed whole: only flat folders take a name prefix.
        if t == FileType::Pack {
            let mut all = self.list(t)?;
            all.retain(|f| f.name.starts_with(prefix));
            return Ok(all);
        }
        self.list_under(t, &format!("{}/{prefix}", t.dirname()))
    }

    fn list(&self, t: FileType) -> BResult<Vec<FileInfo>> {
        self.list_under(t, &format!("{}/", t.dirname()))
    }

    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>> {
        let key = self.key(t, name);
        self.rt.block_on(self.get(&key, None))
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> BResult<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let key = self.key(t, name);
        let range = format!("bytes={offset}-{}", offset + len as u64 - 1);
        let data = self.rt.block_on(self.get(&key, Some(range)))?;
        if data.len() != len as usize {
            return Err(BackendError::new(
                ErrorKind::Permanent,
                format!(
                    "S3 read {key}: asked for {len} bytes at {offset}, got {} (truncated file?)",
                    data.len()
                ),
            ));
        }
        Ok(data)
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        check_name(name)?;
        let key = self.key(t, name);
        let r = self.rt.block_on(self.put(&key, data.to_vec()));
        self.finish_put(t, &key, Some(data), r)
    }

    fn write_path(&self, t: FileType, name: &str, path: &Path) -> BResult<()> {
        check_name(name)?;
        let key = self.key(t, name);
        let size = std::fs::metadata(path)
            .map_err(|e| {
                BackendError::new(
                    ErrorKind::Permanent,
                    format!("read staged file {}: {e}", path.display()),
                )
            })?
            .len();
        let r = if size > self.multipart_threshold {
            self.rt.block_on(self.put_multipart(&key, path, size))
        } else {
            let data = read_part(path, 0, size)?;
            self.rt.block_on(self.put(&key, data))
        };
        self.finish_put(t, &key, None, r)
    }

    fn lock_status(&self) -> BResult<LockStatus> {
        self.rt.block_on(self.lock_configuration())
    }

    fn prepare_lock(&self, policy: &LockPolicy) -> BResult<()> {
        self.rt.block_on(async {
            self.create_bucket_if_missing(true).await?;
            let status = self.lock_configuration().await?;
            if !status.enabled {
                return Err(BackendError::new(
                    ErrorKind::Permanent,
                    format!(
                        "bucket {} at {} has no Object Lock, and S3 turns it on only when a \
                         bucket is created: give `sbk init --object-lock` a bucket that does not \
                         exist yet (it creates one with Object Lock) or one created with it",
                        self.url.bucket, self.url.endpoint
                    ),
                ));
            }
            match status.default {
                Some(found) if found == *policy => return Ok(()),
                Some(found) => {
                    return Err(BackendError::new(
                        ErrorKind::Permanent,
                        format!(
                            "bucket {} locks new objects {found} by default, not {policy} as \
                             asked: use a bucket of its own for this repository, or ask for \
                             --object-lock {} --lock-days {}",
                            self.url.bucket, found.mode, found.days
                        ),
                    ))
                }
                None => {}
            }
            let mode = sdk_mode(policy.mode);
            let conf = ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(
                    ObjectLockRule::builder()
                        .default_retention(
                            DefaultRetention::builder()
                                .mode(mode)
                                .days(policy.days as i32)
                                .build(),
                        )
                        .build(),
                )
                .build();
            self.client
                .put_object_lock_configuration()
                .bucket(&self.url.bucket)
                .object_lock_configuration(conf)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("set the default retention of", "", e))
        })
    }

    fn extend_retention(
        &self,
        t: FileType,
        name: &str,
        policy: &LockPolicy,
        until: chrono::DateTime<chrono::Utc>,
    ) -> BResult<()> {
        let key = self.key(t, name);
        let mode = sdk_mode(policy.mode);
        let retention = ObjectLockRetention::builder()
            .mode(mode)
            .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
                until.timestamp(),
            ))
            .build();
        self.rt
            .block_on(
                self.client
                    .put_object_retention()
                    .bucket(&self.url.bucket)
                    .key(&key)
                    .retention(retention)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| self.err("extend the retention of", &key, e))
    }

    fn retention(
        &self,
        t: FileType,
        name: &str,
        version: &str,
    ) -> BResult<Option<chrono::DateTime<chrono::Utc>>> {
        let key = self.key(t, name);
        let r = self.rt.block_on(
            self.client
                .get_object_retention()
                .bucket(&self.url.bucket)
                .key(&key)
                .version_id(version)
                .send(),
        );
        match r {
            Ok(out) => Ok(out
                .retention()
                .and_then(|r| r.retain_until_date())
                .and_then(|d| chrono::DateTime::from_timestamp(d.secs(), d.subsec_nanos()))),
            Err(e)
                if matches!(
                    e.code(),
                    Some("NoSuchObjectLockConfiguration" | "ObjectLockConfigurationNotFoundError")
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.err("read the retention of", &key, e)),
        }
    }

    fn versions(&self) -> BResult<Vec<Version>> {
        self.rt.block_on(self.list_versions())
    }

    fn remove_version(&self, t: FileType, name: &str, version: &str) -> BResult<()> {
        let key = self.key(t, name);
        self.rt
            .block_on(
                self.client
                    .delete_object()
                    .bucket(&self.url.bucket)
                    .key(&key)
                    .version_id(version)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| self.err(&format!("remove version {version} of"), &key, e))
    }

    fn restore_version(&self, t: FileType, name: &str, version: &str) -> BResult<()> {
        let key = self.key(t, name);
        // Keys are hex names under fixed folders: nothing in them needs URL encoding.
        let source = format!("{}/{key}?versionId={version}", self.url.bucket);
        self.rt
            .block_on(
                self.client
                    .copy_object()
                    .bucket(&self.url.bucket)
                    .key(&key)
                    .copy_source(source)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| self.err(&format!("restore version {version} of"), &key, e))
    }

    fn remove(&self, t: FileType, name: &str) -> BResult<()> {
        let key = self.key(t, name);
        self.rt
            .block_on(
                self.client
                    .delete_object()
                    .bucket(&self.url.bucket)
                    .key(&key)
                    .send(),
            )
            .map(|_| ())
            .or_else(|e| {
                let e = self.err("remove", &key, e);
                if e.kind == ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
    }

    /// One DeleteObjects (quiet: only failures are listed) per [`super::REMOVE_BATCH`] names.
    fn remove_all(&self, t: FileType, names: &[String]) -> BResult<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        for batch in names.chunks(super::REMOVE_BATCH) {
            let mut objects = Vec::with_capacity(batch.len());
            for name in batch {
                check_name(name)?;
                let key = self.key(t, name);
                objects.push(ObjectIdentifier::builder().key(key).build().map_err(|e| {
                    BackendError::new(ErrorKind::Permanent, format!("S3 delete request: {e}"))
                })?);
            }
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| {
                    BackendError::new(ErrorKind::Permanent, format!("S3 delete request: {e}"))
                })?;
            let first = self.key(t, &batch[0]);
            let out = self
                .rt
                .block_on(
                    self.client
                        .delete_objects()
                        .bucket(&self.url.bucket)
                        .delete(delete)
                        .send(),
                )
                .map_err(|e| self.err("remove (a batch from)", &first, e))?;
            if let Some(e) = out
                .errors()
                .iter()
                .find(|e| !matches!(e.code(), Some("NoSuchKey" | "NotFound")))
            {
                let code = e.code().unwrap_or("an error");
                let kind = match code {
                    "InternalError" | "SlowDown" | "ServiceUnavailable" => ErrorKind::Transient,
                    _ => ErrorKind::Permanent,
                };
                let denied = if code == "AccessDenied" {
                    ": access denied; check the credentials and the bucket policy"
                } else {
                    ""
                };
                return Err(BackendError::new(
                    kind,
                    format!(
                        "S3 remove {} in bucket {} at {}: {code}{}{denied}",
                        e.key().unwrap_or(&first),
                        self.url.bucket,
                        self.url.endpoint,
                        e.message().map(|m| format!(" ({m})")).unwrap_or_default(),
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = S3Url::parse("s3:http://127.0.0.1:9000/backups/pg/main").unwrap();
        assert_eq!(u.endpoint, "http://127.0.0.1:9000");
        assert_eq!(u.bucket, "backups");
        assert_eq!(u.prefix, "pg/main");
        assert_eq!(u.key("config"), "pg/main/config");
        assert_eq!(u.to_string(), "s3:http://127.0.0.1:9000/backups/pg/main");
        let u = S3Url::parse("s3:https://minio.example.org/bkt/").unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("bkt", ""));
        assert_eq!(u.key("keys/x"), "keys/x");
        for bad in [
            "s3:minio/b",
            "s3:ftp://h/b",
            "s3:http://h",
            "s3:http://h/",
            "s3:http://u:secret@h/b",
            "s3:http://h/bucket?x=1",
            "s3:http://h/b",
            "s3:http://h/Upper",
        ] {
            let e = S3Url::parse(bad).unwrap_err();
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
