//! PostgreSQL: connection parameters as libpq resolves them ([`conn`]), TLS ([`tls`]), a small
//! blocking client for catalogue queries ([`client`]), the client programs sbk runs ([`tools`]),
//! the manifest stored beside each dump ([`manifest`]), and a restored data folder started and
//! followed through its recovery ([`server`]).

pub mod archive;
pub mod client;
pub mod conn;
pub mod feed;
pub mod manifest;
pub mod server;
pub mod tls;
pub mod tools;
