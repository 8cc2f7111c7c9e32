//! The one stand-in of the Supabase tests: a small server with exactly the Management API
//! endpoints sbk uses, in the shapes of Supabase's published OpenAPI document (`/v1/projects/
//! {ref}/functions`, `.../functions/{slug}/body` as multipart, `.../functions/deploy`,
//! `.../secrets`, `.../config/auth`, `.../postgrest`, `.../config/storage`). Bearer token
//! checked; it can answer 429 with `Retry-After` a given number of times.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;

/// A deployed or listed function.
#[derive(Clone, Debug)]
pub struct Function {
    pub slug: String,
    pub verify_jwt: bool,
    /// Files relative to the function's folder.
    pub files: Vec<(String, Vec<u8>)>,
}

/// A deploy received: slug, metadata, files.
pub type Deploy = (String, serde_json::Value, Vec<(String, Vec<u8>)>);

#[derive(Default)]
pub struct State {
    pub functions: Vec<Function>,
    pub secrets: Vec<String>,
    /// Settings documents by API path (`/config/auth`).
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Answer this many requests with 429 first.
    pub throttle: usize,
    /// Deploys received: slug, metadata, files.
    pub deployed: Vec<Deploy>,
    /// Every request line, `GET /v1/...`.
    pub log: Vec<String>,
}

pub struct ApiServer {
    pub addr: SocketAddr,
    pub token: String,
    pub state: Arc<Mutex<State>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl ApiServer {
    pub fn start(project_ref: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let token = format!("sbp_test{:032x}", std::process::id() as u128 * 7919);
        let state = Arc::new(Mutex::new(State::default()));
        let (st, tok, r) = (Arc::clone(&state), token.clone(), project_ref.to_string());
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let (st, tok, r) = (Arc::clone(&st), tok.clone(), r.clone());
                let service = hyper::service::service_fn(move |req| {
                    let (st, tok, r) = (Arc::clone(&st), tok.clone(), r.clone());
                    async move { Ok::<_, Infallible>(handle(req, &st, &tok, &r).await) }
                });
                let conn = http
                    .serve_connection(TokioIo::new(socket), service)
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        ApiServer {
            addr,
            token,
            state,
            rt: Some(rt),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn json(status: u16, v: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .header("x-ratelimit-limit", "120")
        .header("x-ratelimit-remaining", "119")
        .header("x-ratelimit-reset", "60")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

fn function_json(f: &Function, version: usize) -> serde_json::Value {
    serde_json::json!({
        "id": format!("00000000-0000-0000-0000-{:012}", version),
        "slug": f.slug, "name": f.slug, "status": "ACTIVE", "version": version,
        "created_at": 1746908962504u64, "updated_at": 1746908962504u64,
        "verify_jwt": f.verify_jwt, "import_map": false,
        "entrypoint_path": format!("file:///tmp/user_fn_x/source/{}/index.ts", f.slug),
        "import_map_path": null,
        "ezbr_sha256": "0000"
    })
}

async fn handle(
    req: Request<Incoming>,
    state: &Mutex<State>,
    token: &str,
    project_ref: &str,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    state.lock().unwrap().log.push(format!("{method} {path}"));
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {token}").as_str());
    if !authorized {
        return json(401, serde_json::json!({"message": "Unauthorized"}));
    }
    {
        let mut st = state.lock().unwrap();
        if st.throttle > 0 {
            st.throttle -= 1;
            let mut r = json(
                429,
                serde_json::json!({"message": "ThrottlerException: Too Many Requests"}),
            );
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            return r;
        }
    }
    let prefix = format!("/v1/projects/{project_ref}");
    let Some(rest) = path.strip_prefix(&prefix) else {
        return json(404, serde_json::json!({"message": "Project not found"}));
    };
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let st = state.lock().unwrap();
    match (method.as_str(), rest) {
        ("GET", "/functions") => {
            let list: Vec<_> = st
                .functions
                .iter()
                .enumerate()
                .map(|(i, f)| function_json(f, i + 1))
                .collect();
            json(200, serde_json::Value::Array(list))
        }
        ("GET", p) if p.starts_with("/functions/") && p.ends_with("/body") => {
            let slug = &p["/functions/".len()..p.len() - "/body".len()];
            let Some(f) = st.functions.iter().find(|f| f.slug == slug) else {
                return json(404, serde_json::json!({"message": "Function not found"}));
            };
            if !accept.contains("multipart/form-data") {
                return json(406, serde_json::json!({"message": "eszip only"}));
            }
            // As the platform answers: a metadata part, then file parts named by their path
            // under the bundle's root (one with the Supabase-Path header).
            let boundary = "test-boundary-0001";
            let mut b = Vec::new();
            b.extend_from_slice(format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n{{\"deno2_entrypoint_path\":\"source/{slug}/index.ts\"}}\r\n"
            ).as_bytes());
            for (i, (name, data)) in f.files.iter().enumerate() {
                if i == 0 {
                    b.extend_from_slice(format!(
                        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nSupabase-Path: source/{slug}/{name}\r\nContent-Type: text/plain\r\n\r\n"
                    ).as_bytes());
                } else {
                    b.extend_from_slice(format!(
                        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"source/{slug}/{name}\"\r\nContent-Type: text/plain\r\n\r\n"
                    ).as_bytes());
                }
                b.extend_from_slice(data);
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            Response::builder()
                .status(200)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(Full::new(Bytes::from(b)))
                .unwrap()
        }
        ("POST", "/functions/deploy") => {
            let slug = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("slug="))
                .unwrap_or("")
                .to_string();
            let Ok(boundary) = multer::parse_boundary(&content_type) else {
                return json(400, serde_json::json!({"message": "expected multipart"}));
            };
            drop(st);
            let stream =
                futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
            let mut form = multer::Multipart::new(stream, boundary);
            let mut metadata = serde_json::Value::Null;
            let mut files = Vec::new();
            while let Ok(Some(field)) = form.next_field().await {
                let name = field.name().unwrap_or("").to_string();
                let file_name = field.file_name().map(str::to_string);
                let data = field.bytes().await.unwrap().to_vec();
                match (name.as_str(), file_name) {
                    ("metadata", None) => metadata = serde_json::from_slice(&data).unwrap(),
                    ("file", Some(f)) => files.push((f, data)),
                    _ => return json(400, serde_json::json!({"message": "unexpected part"})),
                }
            }
            if metadata.get("entrypoint_path").is_none() {
                return json(
                    400,
                    serde_json::json!({"message": "metadata.entrypoint_path is required"}),
                );
            }
            let mut st = state.lock().unwrap();
            let f = Function {
                slug: slug.clone(),
                verify_jwt: metadata["verify_jwt"].as_bool().unwrap_or(true),
                files: files.clone(),
            };
            st.functions.retain(|x| x.slug != slug);
            st.functions.push(f.clone());
            st.deployed.push((slug, metadata, files));
            let n = st.functions.len();
            json(201, function_json(&f, n))
        }
        ("GET", "/secrets") => json(
            200,
            serde_json::Value::Array(
                st.secrets
                    .iter()
                    .map(|n| serde_json::json!({"name": n, "value": "3f1a9c0de8b7"}))
                    .collect(),
            ),
        ),
        ("GET", p) if st.settings.contains_key(p) => json(200, st.settings[p].clone()),
        _ => json(404, serde_json::json!({"message": "Not found"})),
    }
}
