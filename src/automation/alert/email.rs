//! E-mail alerts over SMTP (lettre): the transport per channel security, one message, and the
//! probe that greets a server without sending.

use super::*;

pub(super) fn send_email(
    c: &EmailChannel,
    alert: &Alert,
    label: &str,
    scrub: &Scrubber,
) -> Result<(), AlertError> {
    use lettre::message::header::ContentType;
    use lettre::message::Mailbox;
    use lettre::{Message, Transport};

    let config = |message: String| AlertError::Config {
        channel: label.to_owned(),
        message: scrub.scrub(&message),
    };
    let parse = |what: &str, address: &str| -> Result<Mailbox, AlertError> {
        address
            .trim()
            .parse::<Mailbox>()
            .map_err(|e| config(format!("invalid {what} address {address:?}: {e}")))
    };

    let mut builder = Message::builder()
        .from(parse("sender", &c.from)?)
        .subject(alert.subject());
    if c.to.is_empty() {
        return Err(config("no recipients".to_owned()));
    }
    for to in &c.to {
        builder = builder.to(parse("recipient", to)?);
    }
    let message = builder
        .header(ContentType::TEXT_PLAIN)
        .body(alert.text())
        .map_err(|e| config(format!("cannot build the message: {}", scrub.chain(&e))))?;

    let transport = smtp_transport(c, label, scrub)?;
    transport
        .send(&message)
        .map(|_| ())
        .map_err(|e| AlertError::Smtp {
            channel: label.to_owned(),
            message: format!("{}:{}: {}", c.server, c.port, scrub.chain(&e)),
        })
}

/// The SMTP transport of a channel: TLS as configured, AUTH when a username is set.
pub(super) fn smtp_transport(
    c: &EmailChannel,
    label: &str,
    scrub: &Scrubber,
) -> Result<lettre::SmtpTransport, AlertError> {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::SmtpTransport;

    let config = |message: String| AlertError::Config {
        channel: label.to_owned(),
        message: scrub.scrub(&message),
    };
    if c.security == SmtpSecurity::None
        && c.username.is_some()
        && !c.insecure
        && !crate::repository::open::is_loopback_host(Some(&c.server))
    {
        return Err(config(
            "security \"none\" would send the SMTP password in clear to another machine: use \
             starttls or tls, or set insecure = true"
                .to_owned(),
        ));
    }
    let mut transport = SmtpTransport::builder_dangerous(c.server.as_str())
        .port(c.port)
        .timeout(Some(c.timeout));
    if c.security != SmtpSecurity::None {
        let mut params = TlsParameters::builder(c.server.clone());
        if let Some(path) = &c.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| config(format!("CA file {}: {e}", path.display())))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| config(format!("CA file {}: {}", path.display(), scrub.chain(&e))))?;
            params = params.add_root_certificate(cert);
        }
        let params = params
            .build()
            .map_err(|e| config(format!("TLS set-up: {}", scrub.chain(&e))))?;
        transport = transport.tls(match c.security {
            SmtpSecurity::Starttls => Tls::Required(params),
            _ => Tls::Wrapper(params),
        });
    }
    if let Some(user) = &c.username {
        let password = c.password.as_deref().map(String::as_str).unwrap_or("");
        transport = transport
            .credentials(Credentials::new(user.clone(), password.to_owned()))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    Ok(transport.build())
}

/// Connects to a channel's SMTP server as a delivery would (TLS, EHLO, AUTH when a username
/// is set), says NOOP and QUIT, and sends nothing: `config check --probe` proves the channel
/// can deliver without mailing anyone.
pub fn probe_email(c: &EmailChannel) -> Result<(), AlertError> {
    let channel = Channel::Email(c.clone());
    let scrub = Scrubber::for_channel(&channel);
    let label = channel.label();
    let transport = smtp_transport(c, &label, &scrub)?;
    let failed = |message: String| AlertError::Smtp {
        channel: label.clone(),
        message: format!("{}:{}: {message}", c.server, c.port),
    };
    match transport.test_connection() {
        Ok(true) => Ok(()),
        Ok(false) => Err(failed("the server did not answer NOOP".to_owned())),
        Err(e) => Err(failed(scrub.chain(&e))),
    }
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish_non_exhaustive()
    }
}
