//! A blocking wrapper around one tokio-postgres connection: sbk's pipeline is threads, and its
//! catalogue queries are few, so each connection gets a small current-thread runtime.

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::conn::{ConnParams, SslMode};
use super::tls;
use crate::error::{Error, Result};

/// One open connection.
pub struct Client {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    /// `database on host:port`, for messages.
    target: String,
}

impl Client {
    /// Connects and authenticates; errors name the server, database and user, never the password.
    pub fn connect(p: &ConnParams) -> Result<Self> {
        let target = format!("database {:?} on {} as {:?}", p.dbname, p.server(), p.user);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Postgres(format!("cannot start the PostgreSQL client: {e}")))?;
        let mut config = tokio_postgres::Config::new();
        if p.is_socket() {
            config.host_path(&p.host);
        } else {
            config.host(&p.host);
        }
        config.port(p.port).user(&p.user).dbname(&p.dbname);
        if let Some(pw) = p.password() {
            config.password(pw);
        }
        if let Some(t) = p.connect_timeout {
            config.connect_timeout(t);
        }
        config.application_name(p.application_name.as_deref().unwrap_or("sbk"));
        if let Some(o) = &p.options {
            config.options(o);
        }
        config.ssl_mode(match p.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let tls = if p.is_socket() {
            None
        } else {
            tls::client_config(p)?
        };
        let result = rt.block_on(async {
            match tls {
                Some(c) => {
                    let (client, conn) = config
                        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(c))
                        .await?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Ok(client)
                }
                None => {
                    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Ok(client)
                }
            }
        });
        let client = result.map_err(|e: tokio_postgres::Error| {
            let mut why = describe(&e);
            if matches!(
                p.sslmode,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
            ) && why.contains("TLS")
            {
                why = format!("{why} (sslmode={} requires TLS)", p.sslmode.as_str());
            }
            if why.contains("password missing") {
                why = format!(
                    "{why}: the server wants a password and none was given: set PGPASSWORD, \
                     add a line to ~/.pgpass (or the file PGPASSFILE names), or give the \
                     source's `password` in the configuration"
                );
            }
            Error::Postgres(format!("cannot connect to {target}: {why}"))
        })?;
        Ok(Client { rt, client, target })
    }

    /// Runs a query and returns its rows.
    pub fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        self.rt
            .block_on(self.client.query(sql, params))
            .map_err(|e| self.error(&e))
    }

    /// Runs statements without results (several, separated by `;`).
    pub fn batch(&self, sql: &str) -> Result<()> {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .map_err(|e| self.error(&e))
    }

    fn error(&self, e: &tokio_postgres::Error) -> Error {
        Error::Postgres(format!("{}: {}", self.target, describe(e)))
    }
}

/// The server's own message where there is one, else the client error and its cause.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s = format!("{s}: {c}");
        }
        source = cause.source();
    }
    s
}

/// Quotes an identifier for SQL (`"a""b"`).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
