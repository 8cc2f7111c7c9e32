//! Supabase Storage through its S3 endpoint (`<project-url>/storage/v1/s3`): path-style, SigV4
//! with the project's S3 access keys (`SUPABASE_S3_ACCESS_KEY_ID`,
//! `SUPABASE_S3_SECRET_ACCESS_KEY`), never the AWS credential chain, which belongs to the
//! repository. Requests that fail transiently (throttling, 5xx, time-outs, dropped connections)
//! are retried with jittered backoff until a deadline.
//!
//! Blocking calls on a runtime of its own, so that several download threads can call at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTimeFormat};
use aws_sdk_s3::Client;

use crate::backend::retry::jittered_backoff;
use crate::backend::s3::{classify, https_client_with_ca, source_chain};
use crate::backend::{BackendError, ErrorKind};
use crate::error::{Error, Result};

/// The variables Storage's S3 keys come from.
pub const ACCESS_KEY_VAR: &str = "SUPABASE_S3_ACCESS_KEY_ID";
pub const SECRET_KEY_VAR: &str = "SUPABASE_S3_SECRET_ACCESS_KEY";

/// An object as the listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: String,
    /// RFC 3339, as the server reported it.
    pub last_modified: String,
}

/// What a GET says about an object besides its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub etag: Option<String>,
    pub size: u64,
    /// `x-amz-meta-*` (Storage's user metadata).
    pub metadata: BTreeMap<String, String>,
}

/// Connection settings.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    pub endpoint: String,
    pub region: String,
    pub ca_cert: Option<PathBuf>,
    pub deadline: Duration,
    pub io_timeout: Duration,
}

/// A Storage S3 client (see the module documentation).
pub struct StorageClient {
    rt: tokio::runtime::Runtime,
    client: Client,
    endpoint: String,
    deadline: Duration,
}

/// The keys from the environment, if both are set.
pub fn credentials_from_env() -> Option<(String, zeroize::Zeroizing<String>)> {
    let id = crate::postgres::conn::process_env(ACCESS_KEY_VAR)?;
    let secret = crate::postgres::conn::process_env(SECRET_KEY_VAR)?;
    Some((id, zeroize::Zeroizing::new(secret)))
}

impl StorageClient {
    /// A client for `opts.endpoint` with these keys; nothing is sent yet.
    pub fn new(opts: &StorageOptions, key_id: &str, secret: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sbk-storage")
            .enable_all()
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start the Storage client: {e}")))?;
        let url = url::Url::parse(&opts.endpoint)
            .map_err(|e| Error::Invalid(format!("storage endpoint {:?}: {e}", opts.endpoint)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::Invalid(format!(
                "storage endpoint {:?}: expected http[s]://host[:port][/path]",
                opts.endpoint
            )));
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(opts.region.clone()))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                key_id,
                secret,
                None,
                None,
                "supabase-storage",
            ));
        if let Some(ca) = &opts.ca_cert {
            loader = loader.http_client(https_client_with_ca(ca)?);
        }
        let sdk = rt.block_on(loader.load());
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .endpoint_url(opts.endpoint.trim_end_matches('/'))
            .force_path_style(true)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(opts.io_timeout)
                    .build(),
            )
            .build();
        Ok(StorageClient {
            rt,
            client: Client::from_conf(conf),
            endpoint: opts.endpoint.clone(),
            deadline: opts.deadline,
        })
    }

    /// A client for `endpoint` whose keys are checked at once (by listing the buckets), so that
    /// a wrong key stops a run before anything is stored or changed.
    pub fn connect(
        endpoint: &str,
        region: &str,
        keys: &(String, zeroize::Zeroizing<String>),
        ca_cert: Option<PathBuf>,
        deadline: Duration,
    ) -> Result<Self> {
        let c = StorageClient::new(
            &StorageOptions {
                endpoint: endpoint.to_string(),
                region: region.to_string(),
                ca_cert,
                deadline,
                io_timeout: crate::backend::s3::READ_TIMEOUT,
            },
            &keys.0,
            &keys.1,
        )?;
        c.list_buckets()?;
        Ok(c)
    }

    fn err<E>(
        &self,
        op: &str,
        what: &str,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().map(str::to_string);
        let message = e.message().map(str::to_string);
        let (kind, reason) = classify(&e, status, code.as_deref(), message.as_deref());
        let reason = match (status, code.as_deref()) {
            (Some(401 | 403), _)
            | (_, Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied")) => {
                format!(
                    "the server refused the keys (HTTP {}): check {ACCESS_KEY_VAR} and \
                     {SECRET_KEY_VAR} (Dashboard > Storage > S3 access keys) and \
                     --storage-region",
                    status.unwrap_or(0)
                )
            }
            (_, Some("NoSuchBucket")) => "the bucket does not exist".into(),
            _ => reason,
        };
        BackendError::new(
            kind,
            format!("Storage {op} {what} at {}: {reason}", self.endpoint),
        )
    }

    /// Runs `f` until it succeeds, fails for good or the deadline passes.
    fn retry<T, F, Fut>(&self, mut f: F) -> std::result::Result<T, BackendError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, BackendError>>,
    {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            match self.rt.block_on(f()) {
                Err(e) if e.kind == ErrorKind::Transient => {
                    attempt += 1;
                    let wait = jittered_backoff(attempt);
                    if start.elapsed() + wait >= self.deadline {
                        return Err(BackendError::new(
                            ErrorKind::Transient,
                            format!("{} (gave up after {attempt} attempts)", e.message),
                        ));
                    }
                    std::thread::sleep(wait);
                }
                other => return other,
            }
        }
    }

    /// The buckets the keys can see: also the check that the keys work.
    pub fn list_buckets(&self) -> Result<Vec<String>> {
        Ok(self.retry(|| async {
            let out = self
                .client
                .list_buckets()
                .send()
                .await
                .map_err(|e| self.err("list", "buckets", e))?;
            Ok(out
                .buckets()
                .iter()
                .filter_map(|b| b.name().map(str::to_string))
                .collect())
        })?)
    }

    /// Every object of `bucket`, in the server's order.
    pub fn list_objects(&self, bucket: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.retry(|| {
                let token = token.clone();
                async move {
                    self.client
                        .list_objects_v2()
                        .bucket(bucket)
                        .set_continuation_token(token)
                        .send()
                        .await
                        .map_err(|e| self.err("list", &format!("bucket {bucket}"), e))
                }
            })?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                out.push(ObjectInfo {
                    key: key.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().unwrap_or_default().to_string(),
                    last_modified: o
                        .last_modified()
                        .and_then(|d| d.fmt(DateTimeFormat::DateTime).ok())
                        .unwrap_or_default(),
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// Starts a download; `None` when the object is gone (deleted since the listing).
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<(ObjectMeta, ByteStream)>> {
        let got = self.retry(|| async {
            self.client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| self.err("download", &format!("{bucket}/{key}"), e))
        });
        let out = match got {
            Ok(o) => o,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta = ObjectMeta {
            content_type: out.content_type().map(str::to_string),
            cache_control: out.cache_control().map(str::to_string),
            etag: out.e_tag().map(str::to_string),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            metadata: out
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        };
        Ok(Some((meta, out.body)))
    }

    /// An object's ETag by a HEAD request (for servers whose listings carry none); `None` when
    /// the object is gone.
    pub fn head_etag(&self, bucket: &str, key: &str) -> Result<Option<String>> {
        let got = self.retry(|| async {
            self.client
                .head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| self.err("check", &format!("{bucket}/{key}"), e))
        });
        match got {
            Ok(o) => Ok(Some(o.e_tag().unwrap_or_default().to_string())),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Downloads a whole (small) object; `None` when it is gone. A connection lost while the
    /// body streams is retried with a new request.
    pub fn get_bytes(&self, bucket: &str, key: &str) -> Result<Option<(ObjectMeta, Vec<u8>)>> {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            let Some((meta, body)) = self.get(bucket, key)? else {
                return Ok(None);
            };
            match self.rt.block_on(body.collect()) {
                Ok(b) => return Ok(Some((meta, b.into_bytes().to_vec()))),
                Err(e) => {
                    attempt += 1;
                    let wait = jittered_backoff(attempt);
                    if start.elapsed() + wait >= self.deadline {
                        return Err(Error::Source(format!(
                            "Storage download {bucket}/{key} at {}: connection lost: {}",
                            self.endpoint,
                            source_chain(&e)
                        )));
                    }
                    std::thread::sleep(wait);
                }
            }
        }
    }

    /// A blocking reader over a body being downloaded.
    pub fn reader(&self, body: ByteStream) -> BodyReader {
        BodyReader {
            rt: self.rt.handle().clone(),
            body,
            buf: bytes::Bytes::new(),
        }
    }

    /// Whether `bucket` exists.
    pub fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        let r = self.retry(|| async {
            self.client
                .head_bucket()
                .bucket(bucket)
                .send()
                .await
                .map_err(|e| self.err("check", &format!("bucket {bucket}"), e))
        });
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates `bucket` (its settings are rows of `storage.buckets`, set afterwards).
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        Ok(self.retry(|| async {
            match self.client.create_bucket().bucket(bucket).send().await {
                Ok(_) => Ok(()),
                Err(e)
                    if matches!(
                        e.code(),
                        Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                    ) =>
                {
                    Ok(())
                }
                Err(e) => Err(self.err("create", &format!("bucket {bucket}"), e)),
            }
        })?)
    }

    /// Uploads an object with its content type, cache control and user metadata.
    pub fn put(&self, bucket: &str, key: &str, meta: &ObjectMeta, body: &[u8]) -> Result<()> {
        self.put_with(bucket, key, meta, || async {
            Ok(ByteStream::from(body.to_vec()))
        })
    }

    /// Uploads an object from a file (a large one, staged by a restore).
    pub fn put_file(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        path: &std::path::Path,
    ) -> Result<()> {
        self.put_with(bucket, key, meta, || async {
            ByteStream::from_path(path).await.map_err(|e| {
                BackendError::new(
                    ErrorKind::Permanent,
                    format!("read {}: {e}", path.display()),
                )
            })
        })
    }

    /// One PUT with retries; `body` makes the request body afresh for each attempt.
    fn put_with<F, Fut>(&self, bucket: &str, key: &str, meta: &ObjectMeta, body: F) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<ByteStream, BackendError>>,
    {
        let metadata =
            (!meta.metadata.is_empty()).then(|| meta.metadata.clone().into_iter().collect());
        Ok(self.retry(|| async {
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .set_content_type(meta.content_type.clone())
                .set_cache_control(meta.cache_control.clone())
                .set_metadata(metadata.clone())
                .body(body().await?)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("upload", &format!("{bucket}/{key}"), e))
        })?)
    }
}

/// A download's body as a blocking [`Read`]; call only from threads outside the client's
/// runtime.
pub struct BodyReader {
    rt: tokio::runtime::Handle,
    body: ByteStream,
    buf: bytes::Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rt.block_on(self.body.try_next()) {
                Ok(Some(b)) => self.buf = b,
                Ok(None) => return Ok(0),
                Err(e) => {
                    return Err(std::io::Error::other(format!(
                        "connection lost: {}",
                        source_chain(&e)
                    )))
                }
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        Ok(n)
    }
}
