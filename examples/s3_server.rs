//! A loopback S3 server for benchmarks (`benches/s3.sh`, `benches/supabase-storage.sh`): s3s-fs
//! over a folder, SigV4 checked against `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, counting
//! requests by method.
//!
//! `s3_server ROOT PORT_FILE STATS_FILE`: serves on 127.0.0.1 at a free port written to
//! PORT_FILE; every 100 ms writes `GET n PUT n POST n HEAD n DELETE n` to STATS_FILE (through a
//! rename, so that a reader never sees it half-written).
//!
//! Listings carry ETags, as MinIO's (and S3's) do: s3s-fs's ListObjects/ListObjectsV2 answers
//! give only key, size and time, so each object's ETag is added from the internal-info file
//! s3s-fs writes beside the data at PUT (the MD5 it computed, or the multipart ETag), quoted as
//! its GET and HEAD answers give it. A client that compares ETags from the listing (sbk's reuse
//! of unchanged Storage objects) then needs no HEAD per object. `SBK_BENCH_LIST_NO_ETAG=1` gives
//! listings without ETags, as s3s-fs's are.
//!
//! A listing without delimiter (a whole bucket in pages of up to 1000 keys: sbk's Storage
//! listing) walks the bucket's folders for the names only, then stats the page's objects: a few
//! ms a page here. s3s-fs stats every object of the bucket for every page, each through Tokio's
//! blocking pool (~0.3 server CPU-s a page for a 10,000-object bucket, 3.4 for the whole listing,
//! on the benchmark machine), which S3 and MinIO do not. `SBK_BENCH_S3S_FS_LIST=1` gives s3s-fs's
//! listing. Listings with a delimiter (rclone's, folder by folder) are s3s-fs's either way.
//!
//! With `SBK_BENCH_FAST_GET=1`, ranged GETs are answered from one positioned read instead of
//! s3s-fs's path, which streams in 4 KiB steps through Tokio's blocking pool. MinIO serves ranges
//! directly; this mode shows what sbk's restore does when the server is not the bottleneck.
//! Everything else (PUTs with their MD5 ETags, HEADs, multipart) is s3s-fs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, S3};

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "HEAD", "DELETE"];

/// s3s-fs with ETags in listings, listings without delimiter that stat only their page and,
/// optionally, ranged GETs served by one positioned read (see the module documentation).
struct BenchFs {
    fs: s3s_fs::FileSystem,
    /// s3s-fs's root, canonical: objects are `ROOT/BUCKET/KEY`, their internal info beside.
    root: std::path::PathBuf,
    fast_get: bool,
    list_e_tags: bool,
    paged_list: bool,
}

impl BenchFs {
    /// A ListObjectsV2 page without delimiter with s3s-fs's answer (every key under the prefix
    /// in byte order, after the continuation token or start-after, up to max-keys), but one walk
    /// of the bucket's folders (names only) and a stat only for the objects on the page: s3s-fs
    /// stats every object of the bucket, through Tokio's blocking pool, for every page.
    async fn list_page(
        &self,
        input: ListObjectsV2Input,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let bucket_root = self.root.join(&input.bucket);
        if !bucket_root.is_dir() {
            return Err(s3s::s3_error!(NoSuchBucket));
        }
        let prefix = input
            .prefix
            .as_deref()
            .unwrap_or("")
            .trim_start_matches('/');
        let after = match (
            input.continuation_token.as_deref(),
            input.start_after.as_deref(),
        ) {
            (Some(ct), Some(sa)) => Some(ct.max(sa)),
            (ct, sa) => ct.or(sa),
        };
        let max_keys = input.max_keys.unwrap_or(1000);
        let max = usize::try_from(max_keys).unwrap_or(1000);
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        let (objects, truncated) = tokio::task::spawn_blocking(move || {
            list_page(&bucket_root, &prefix, after.as_deref(), max)
        })
        .await
        .map_err(|e| s3s::s3_error!(e, InternalError))?
        .map_err(|e| s3s::s3_error!(e, InternalError))?;
        let output = ListObjectsV2Output {
            key_count: Some(objects.len() as i32),
            max_keys: Some(max_keys),
            is_truncated: Some(truncated),
            next_continuation_token: truncated
                .then(|| objects.last().and_then(|o| o.key.clone()))
                .flatten(),
            contents: (!objects.is_empty()).then_some(objects),
            continuation_token: input.continuation_token,
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            name: Some(input.bucket),
            prefix: input.prefix,
            start_after: input.start_after,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    /// Fills each listed object's ETag from s3s-fs's internal info, as S3 and MinIO list them.
    async fn add_e_tags(&self, bucket: &str, objects: Option<&mut Vec<Object>>) -> S3Result<()> {
        let Some(objects) = objects.filter(|o| self.list_e_tags && !o.is_empty()) else {
            return Ok(());
        };
        let keys: Vec<String> = objects
            .iter()
            .map(|o| o.key.clone().unwrap_or_default())
            .collect();
        let (root, bucket) = (self.root.clone(), bucket.to_owned());
        let tags = tokio::task::spawn_blocking(move || {
            keys.iter()
                .map(|key| stored_e_tag(&root, &bucket, key))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| s3s::s3_error!(e, InternalError))?;
        for (object, tag) in objects.iter_mut().zip(tags) {
            object.e_tag = tag.map(ETag::Strong);
        }
        Ok(())
    }
}

/// The objects of one page (see `BenchFs::list_page`) and whether more follow.
fn list_page(
    bucket_root: &std::path::Path,
    prefix: &str,
    after: Option<&str>,
    max: usize,
) -> std::io::Result<(Vec<Object>, bool)> {
    let mut keys = Vec::new();
    let mut dirs = vec![bucket_root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            let path = entry.path();
            // The key as s3s-fs makes it: the path's components joined by '/', UTF-8 only.
            let Some(key) = path
                .strip_prefix(bucket_root)
                .ok()
                .and_then(|p| p.iter().map(|c| c.to_str()).collect::<Option<Vec<_>>>())
                .map(|parts| parts.join("/"))
            else {
                continue;
            };
            if key.starts_with(prefix) && after.is_none_or(|a| key.as_str() > a) {
                keys.push(key);
            }
        }
    }
    keys.sort_unstable();
    let truncated = max > 0 && keys.len() > max;
    keys.truncate(max);
    let mut objects = Vec::with_capacity(keys.len());
    for key in keys {
        let meta = match std::fs::metadata(bucket_root.join(&key)) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // deleted meanwhile
            Err(e) => return Err(e),
        };
        objects.push(Object {
            key: Some(key),
            last_modified: Some(Timestamp::from(meta.modified()?)),
            size: Some(meta.len() as i64),
            ..Default::default()
        });
    }
    Ok((objects, truncated))
}

/// The ETag s3s-fs stored for an object (unquoted): field `e_tag` of the JSON object in
/// `ROOT/.bucket-<b64url(BUCKET)>.object-<b64url(KEY)>.internal.json` (s3s-fs's
/// `get_internal_info_path` and `checksum::load_e_tag`); `None` without one.
fn stored_e_tag(root: &std::path::Path, bucket: &str, key: &str) -> Option<String> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let path = root.join(format!(
        ".bucket-{}.object-{}.internal.json",
        b64(bucket),
        b64(key)
    ));
    let info: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    info.get("e_tag")?.as_str().map(str::to_owned)
}

/// Every request but listings (ETags added; without delimiter, `list_page`) and, with
/// `fast_get`, ranged GETs goes to s3s-fs unchanged: all the operations s3s-fs implements, so
/// that nothing else answers differently from plain s3s-fs.
#[async_trait::async_trait]
impl S3 for BenchFs {
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.fs.complete_multipart_upload(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.fs.copy_object(req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.fs.delete_bucket(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let bucket = req.input.bucket.clone();
        let mut resp = self.fs.list_objects(req).await?;
        self.add_e_tags(&bucket, resp.output.contents.as_mut())
            .await?;
        Ok(resp)
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let bucket = req.input.bucket.clone();
        let mut resp = if self.paged_list && req.input.delimiter.is_none() {
            self.list_page(req.input).await?
        } else {
            self.fs.list_objects_v2(req).await?
        };
        self.add_e_tags(&bucket, resp.output.contents.as_mut())
            .await?;
        Ok(resp)
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.fs.put_object(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.fs.upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.fs.upload_part_copy(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let (true, Some(Range::Int { first, last })) = (self.fast_get, req.input.range) else {
            return self.fs.get_object(req).await;
        };
        let path = self.root.join(&req.input.bucket).join(&req.input.key);
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<u8>, u64)> {
            use std::os::unix::fs::FileExt;
            let file = std::fs::File::open(path)?;
            let len = file.metadata()?.len();
            let end = last.map_or(len, |l| (l + 1).min(len));
            let mut buf = vec![0; end.saturating_sub(first) as usize];
            file.read_exact_at(&mut buf, first)?;
            Ok((buf, len))
        })
        .await
        .map_err(|e| s3s::s3_error!(e, InternalError))?;
        let (data, len) = match read {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(s3s::s3_error!(e, NoSuchKey))
            }
            Err(e) => return Err(s3s::s3_error!(e, InternalError)),
        };
        if data.is_empty() || first >= len {
            return Err(s3s::s3_error!(InvalidRange));
        }
        let output = GetObjectOutput {
            content_length: Some(data.len() as i64),
            content_range: Some(format!(
                "bytes {first}-{}/{len}",
                first + data.len() as u64 - 1
            )),
            body: Some(StreamingBlob::from(s3s::Body::from(data))),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }
}

#[derive(Clone)]
struct Counting {
    inner: s3s::service::S3Service,
    counts: Arc<[AtomicU64; 5]>,
}

impl Service<hyper::Request<Incoming>> for Counting {
    type Response = <s3s::service::S3Service as Service<hyper::Request<Incoming>>>::Response;
    type Error = <s3s::service::S3Service as Service<hyper::Request<Incoming>>>::Error;
    type Future = <s3s::service::S3Service as Service<hyper::Request<Incoming>>>::Future;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        if let Some(i) = METHODS.iter().position(|m| *m == req.method().as_str()) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        <s3s::service::S3Service as Service<hyper::Request<Incoming>>>::call(&self.inner, req)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, root, port_file, stats_file] = &args[..] else {
        eprintln!("usage: s3_server ROOT PORT_FILE STATS_FILE");
        std::process::exit(2);
    };
    let key = std::env::var("AWS_ACCESS_KEY_ID").expect("AWS_ACCESS_KEY_ID");
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").expect("AWS_SECRET_ACCESS_KEY");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fs = s3s_fs::FileSystem::new(root).unwrap();
        let flag = |name| std::env::var_os(name).is_some_and(|v| v == "1");
        let mut b = s3s::service::S3ServiceBuilder::new(BenchFs {
            fs,
            root: std::fs::canonicalize(root).unwrap(),
            fast_get: flag("SBK_BENCH_FAST_GET"),
            list_e_tags: !flag("SBK_BENCH_LIST_NO_ETAG"),
            paged_list: !flag("SBK_BENCH_S3S_FS_LIST"),
        });
        b.set_auth(s3s::auth::SimpleAuth::from_single(key, secret));
        let service = Counting {
            inner: b.build(),
            counts: Arc::new(Default::default()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        std::fs::write(port_file, listener.local_addr().unwrap().port().to_string()).unwrap();
        let counts = Arc::clone(&service.counts);
        let stats_file = stats_file.clone();
        tokio::spawn(async move {
            loop {
                let line: Vec<String> = METHODS
                    .iter()
                    .zip(counts.iter())
                    .map(|(m, c)| format!("{m} {}", c.load(Ordering::Relaxed)))
                    .collect();
                // Written beside and renamed over, so a reader never sees a half-written file.
                let tmp = format!("{stats_file}.tmp");
                if std::fs::write(&tmp, line.join(" ") + "\n").is_ok() {
                    let _ = std::fs::rename(&tmp, &stats_file);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            // As MinIO's Go runtime does: without it, Nagle's algorithm holds a response's body
            // behind its headers until the client's delayed ACK, 40 ms per small GET.
            let _ = socket.set_nodelay(true);
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
}
