//! Webhook alerts: a JSON POST over hyper and rustls on a current-thread runtime made for the
//! call (moved to a helper thread when called inside a runtime), bounded by the channel's
//! timeout.

use super::*;

pub(super) fn send_webhook(
    c: &WebhookChannel,
    alert: &Alert,
    label: &str,
    scrub: &Scrubber,
) -> Result<(), AlertError> {
    let config = |message: String| AlertError::Config {
        channel: label.to_owned(),
        message: scrub.scrub(&message),
    };
    let uri: hyper::Uri = c
        .url
        .trim()
        .parse()
        .map_err(|_| config("the URL is not valid".to_owned()))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(config(
                "the URL must start with http:// or https://".to_owned(),
            ))
        }
    };
    if uri.host().is_none() {
        return Err(config("the URL has no host".to_owned()));
    }
    if !https && !c.insecure && !crate::repository::open::is_loopback_host(uri.host()) {
        return Err(config(
            "the URL is plain http:// to another machine, which would send the alert and the \
             URL's token in clear: use https://, or set insecure = true"
                .to_owned(),
        ));
    }
    let tls = client_tls(https, c.ca_file.as_deref()).map_err(config)?;
    let body = serde_json::to_vec(&alert.webhook_json())
        .map_err(|e| config(format!("cannot encode the alert: {e}")))?;
    let request = hyper::Request::post(uri)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("sbk/", env!("CARGO_PKG_VERSION")),
        )
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
        .map_err(|_| config("the URL is not valid".to_owned()))?;

    let run = || -> Result<(), AlertError> {
        let rt = crate::automation::runtime::io_runtime().map_err(|message| AlertError::Http {
            channel: label.to_owned(),
            message,
        })?;
        rt.block_on(post(request, tls, c.timeout, label, scrub))
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        // A runtime cannot be blocked on from inside another: do the request on a helper thread.
        std::thread::scope(|s| {
            s.spawn(run).join().unwrap_or_else(|_| {
                Err(AlertError::Http {
                    channel: label.to_owned(),
                    message: "the request thread panicked".to_owned(),
                })
            })
        })
    } else {
        run()
    }
}

/// TLS for webhooks: the system's roots (only loaded for https), plus `ca_file`.
pub(super) fn client_tls(
    https: bool,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    if https {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if let Some(path) = ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("CA file {}: no certificate in it", path.display()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

pub(super) async fn post(
    request: hyper::Request<http_body_util::Full<hyper::body::Bytes>>,
    tls: rustls::ClientConfig,
    timeout: Duration,
    label: &str,
    scrub: &Scrubber,
) -> Result<(), AlertError> {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, http_body_util::Full<hyper::body::Bytes>> =
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| AlertError::Http {
                channel: label.to_owned(),
                message: scrub.chain(&e),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // A little of the answer helps (Slack says "invalid_payload"); it may quote the URL.
        let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let mut snippet: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        snippet = snippet.trim().to_owned();
        Err(AlertError::Status {
            channel: label.to_owned(),
            status: status.as_u16(),
            body: scrub.scrub(&snippet),
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(AlertError::Timeout {
            channel: label.to_owned(),
            secs: timeout.as_secs_f64().ceil() as u64,
        }),
    }
}

impl std::fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("name", &self.name)
            .field("url", &"<hidden>")
            .finish_non_exhaustive()
    }
}
