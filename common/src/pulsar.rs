//! Pulsar clients built from the job spec, and topic partition discovery.
//!
//! Every part of Weir that talks to Pulsar (the coordinator discovering
//! partitions, workers reading them, `weir produce`) builds its client here,
//! so authentication, TLS and retry settings are the same everywhere and a
//! failure reads the same: the URL, then what went wrong.

use std::time::Duration;

pub use pulsar::{Pulsar, TokioExecutor};

use crate::error_chain::error_chain;
use crate::position::Position;
use crate::spec::PulsarSourceSpec;

/// Why Weir cannot talk to Pulsar.
#[derive(Debug, thiserror::Error)]
pub enum PulsarError {
    #[error("Pulsar token: the environment variable {0} (source.pulsar.token_env) is not set")]
    TokenMissing(String),
    #[error("Pulsar TLS: cannot read the certificate authorities in {path}: {source}")]
    CaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to Pulsar at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("Pulsar TLS settings: {0}")]
    Tls(String),
    #[error("Pulsar at {url}: cannot look up topic {topic}: {message}")]
    Lookup {
        url: String,
        topic: String,
        message: String,
    },
}

/// How to reach a Pulsar cluster (the connection part of a source spec).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub url: String,
    pub token_env: Option<String>,
    pub tls_ca_file: Option<std::path::PathBuf>,
    pub tls_allow_insecure: bool,
}

impl From<&PulsarSourceSpec> for Connection {
    fn from(s: &PulsarSourceSpec) -> Self {
        Connection {
            url: s.url.trim().to_owned(),
            token_env: s.token_env.clone(),
            tls_ca_file: s.tls_ca_file.clone(),
            tls_allow_insecure: s.tls_allow_insecure,
        }
    }
}

/// Connects. Connection attempts are retried briefly (a broker that is
/// restarting), then the error names the URL and the cause: an unreachable
/// broker or a refused token fails here, at start, not later.
pub async fn connect(c: &Connection) -> Result<Pulsar<TokioExecutor>, PulsarError> {
    let mut builder = Pulsar::builder(c.url.clone(), TokioExecutor)
        .with_connection_retry_options(pulsar::ConnectionRetryOptions {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_retries: 4,
            connection_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(30),
            ..pulsar::ConnectionRetryOptions::default()
        })
        .with_operation_retry_options(pulsar::OperationRetryOptions {
            operation_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_millis(500),
            max_retries: Some(20),
        });
    let token = token(c)?;
    if let Some(t) = &token {
        builder = builder.with_auth(pulsar::Authentication {
            name: "token".into(),
            data: t.as_bytes().to_vec(),
        });
    }
    if let Some(path) = &c.tls_ca_file {
        builder = builder
            .with_certificate_chain_file(path)
            .map_err(|source| PulsarError::CaFile {
                path: path.display().to_string(),
                source,
            })?;
    }
    match builder.build().await {
        Ok(client) => Ok(client),
        Err(e) => {
            let mut message = error_chain(&e);
            let reason = match tls_refusal(c).await {
                Some(reason) => Some(reason),
                None => refusal(&c.url, token.as_deref()).await,
            };
            if let Some(reason) = reason {
                message = format!("{reason} ({message})");
            }
            Err(PulsarError::Connect {
                url: c.url.clone(),
                message,
            })
        }
    }
}

/// The token named by `token_env`, if any.
fn token(c: &Connection) -> Result<Option<String>, PulsarError> {
    let Some(var) = &c.token_env else {
        return Ok(None);
    };
    std::env::var(var)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .map(Some)
        .ok_or_else(|| PulsarError::TokenMissing(var.clone()))
}

/// The credentials and TLS settings of Weir's own consumer connections
/// ([`weir_pulsar_wire::WireConsumer`]), the same as the client's: the
/// token, and for `pulsar+ssl://` the CA file's certificates (else the
/// usual public roots).
pub fn wire_settings(c: &Connection) -> Result<WireSettings, PulsarError> {
    let auth = token(c)?.map(|t| weir_pulsar_wire::Auth {
        method: "token".into(),
        data: t.into_bytes(),
    });
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PulsarError::Tls(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    match &c.tls_ca_file {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let ca_error = |e: &dyn std::fmt::Display| PulsarError::CaFile {
                path: path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            };
            for cert in
                rustls::pki_types::CertificateDer::pem_file_iter(path).map_err(|e| ca_error(&e))?
            {
                roots
                    .add(cert.map_err(|e| ca_error(&e))?)
                    .map_err(|e| ca_error(&e))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = builder.with_root_certificates(roots).with_no_client_auth();
    Ok(WireSettings {
        auth,
        tls: std::sync::Arc::new(config),
    })
}

/// See [`wire_settings`].
#[derive(Clone, Debug)]
pub struct WireSettings {
    pub auth: Option<weir_pulsar_wire::Auth>,
    pub tls: std::sync::Arc<rustls::ClientConfig>,
}

/// The client library reports a failed TLS handshake (an unknown issuer,
/// a name that does not match) only as "fatal error when connecting", so
/// for `pulsar+ssl://` Weir repeats the handshake itself, with the same
/// settings, to name the cause. `None` when it succeeds or the broker is
/// unreachable.
async fn tls_refusal(c: &Connection) -> Option<String> {
    const WAIT: Duration = Duration::from_secs(5);
    let addr = c
        .url
        .trim()
        .strip_prefix("pulsar+ssl://")?
        .trim_end_matches('/');
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let settings = wire_settings(c).ok()?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).ok()?;
    let tcp = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let handshake = tokio_rustls::TlsConnector::from(settings.tls).connect(name, tcp);
    match tokio::time::timeout(WAIT, handshake).await.ok()? {
        Ok(_) => None,
        Err(e) => Some(format!("the TLS handshake failed: {e}")),
    }
}

/// Why the broker refuses a connection, asked directly.
///
/// The client library reports a refused handshake (a wrong token, an
/// unsupported protocol) only as "fatal error when connecting", so after a
/// failure Weir repeats the handshake itself on a plain connection to name
/// the broker's reason. `None` when there is no such answer (TLS, the
/// broker unreachable, or it accepted this time).
async fn refusal(url: &str, token: Option<&str>) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::codec::{Decoder, Encoder};

    const WAIT: Duration = Duration::from_secs(5);
    let addr = url.trim().strip_prefix("pulsar://")?.trim_end_matches('/');
    let mut stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let connect = pulsar::proto::BaseCommand {
        r#type: pulsar::proto::base_command::Type::Connect as i32,
        connect: Some(pulsar::proto::CommandConnect {
            client_version: format!("weir {}", env!("CARGO_PKG_VERSION")),
            auth_method_name: token.map(|_| "token".to_owned()),
            auth_data: token.map(|t| t.as_bytes().to_vec()),
            protocol_version: Some(12),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut codec = pulsar::message::Codec;
    let mut buf = bytes::BytesMut::new();
    codec
        .encode(
            pulsar::message::Message {
                command: connect,
                payload: None,
            },
            &mut buf,
        )
        .ok()?;
    tokio::time::timeout(WAIT, stream.write_all(&buf))
        .await
        .ok()?
        .ok()?;
    buf.clear();
    let reply = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(m) = codec.decode(&mut buf).ok()? {
                return Some(m);
            }
            if stream.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
        }
    })
    .await
    .ok()??;
    let error = reply.command.error?;
    let kind = pulsar::proto::ServerError::try_from(error.error)
        .map_or_else(|_| error.error.to_string(), |k| format!("{k:?}"));
    Some(format!(
        "the broker refused the connection: {kind}: {}",
        error.message
    ))
}

/// `iot` → `persistent://public/default/iot`; `t/n/iot` →
/// `persistent://t/n/iot`; full names stay as they are.
pub fn full_topic_name(topic: &str) -> String {
    let topic = topic.trim();
    if topic.contains("://") {
        topic.to_owned()
    } else if topic.split('/').count() == 3 {
        format!("persistent://{topic}")
    } else {
        format!("persistent://public/default/{topic}")
    }
}

/// The topic's partitions, in partition order: `<topic>-partition-<n>`, or
/// the topic itself when it is not partitioned.
pub async fn partitions(
    client: &Pulsar<TokioExecutor>,
    url: &str,
    topic: &str,
) -> Result<Vec<String>, PulsarError> {
    let topic = full_topic_name(topic);
    let n = client
        .lookup_partitioned_topic_number(topic.clone())
        .await
        .map_err(|e| PulsarError::Lookup {
            url: url.to_owned(),
            topic: topic.clone(),
            message: error_chain(&e),
        })?;
    Ok(partition_names(&topic, n))
}

/// Names of the partitions of a topic with `n` partitions (0: not partitioned).
pub fn partition_names(topic: &str, n: u32) -> Vec<String> {
    if n == 0 {
        vec![topic.to_owned()]
    } else {
        (0..n).map(|i| format!("{topic}-partition-{i}")).collect()
    }
}

/// The position of a message id.
pub fn position_of(id: &pulsar::proto::MessageIdData) -> Position {
    Position::Pulsar {
        ledger: id.ledger_id,
        entry: id.entry_id,
        batch: id.batch_index.unwrap_or(-1),
    }
}

/// The message id to acknowledge cumulatively so that everything up to
/// `position`, and nothing after it, is acknowledged; `None` when there is
/// no such id yet.
///
/// Brokers acknowledge whole entries: a cumulative acknowledgment of a
/// message inside a batch would also acknowledge the rest of its batch. So
/// a position inside a batch acknowledges the entry before it (the batch
/// comes again after a reconnect and its first messages are skipped).
pub fn ack_id_for(position: Position) -> Option<pulsar::proto::MessageIdData> {
    match position {
        Position::Pulsar {
            ledger,
            entry,
            batch,
        } => {
            let entry = if batch < 0 {
                entry
            } else {
                entry.checked_sub(1)?
            };
            Some(pulsar::proto::MessageIdData {
                ledger_id: ledger,
                entry_id: entry,
                ..Default::default()
            })
        }
        Position::Offset(_) => None,
    }
}

/// The message id to seek a subscription to so that reading resumes with
/// the message after `position` (its entry comes again; the messages up to
/// `position` are skipped by the reader).
pub fn seek_id_for(position: Position) -> Option<pulsar::proto::MessageIdData> {
    match position {
        Position::Pulsar { ledger, entry, .. } => Some(pulsar::proto::MessageIdData {
            ledger_id: ledger,
            entry_id: entry,
            ..Default::default()
        }),
        Position::Offset(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_completed() {
        assert_eq!(full_topic_name("iot"), "persistent://public/default/iot");
        assert_eq!(full_topic_name("t/n/iot"), "persistent://t/n/iot");
        assert_eq!(
            full_topic_name("non-persistent://t/n/iot"),
            "non-persistent://t/n/iot"
        );
        assert_eq!(
            partition_names("persistent://a/b/c", 2),
            [
                "persistent://a/b/c-partition-0",
                "persistent://a/b/c-partition-1"
            ]
        );
        assert_eq!(
            partition_names("persistent://a/b/c", 0),
            ["persistent://a/b/c"]
        );
    }

    #[test]
    fn acknowledgments_never_cover_unprocessed_batch_messages() {
        let p = |entry, batch| Position::Pulsar {
            ledger: 5,
            entry,
            batch,
        };
        let id = |entry| (5, entry);
        let ack = |pos| ack_id_for(pos).map(|m| (m.ledger_id, m.entry_id));
        assert_eq!(ack(p(9, -1)), Some(id(9)), "a whole message");
        assert_eq!(
            ack(p(9, 3)),
            Some(id(8)),
            "inside a batch: the entry before"
        );
        assert_eq!(ack(p(0, 0)), None, "nothing before the first entry");
        assert_eq!(ack(Position::Offset(3)), None);
        assert_eq!(seek_id_for(p(9, 3)).map(|m| m.entry_id), Some(9));
    }

    #[tokio::test]
    async fn a_missing_token_is_named() {
        let err = connect(&Connection {
            url: "pulsar://127.0.0.1:1".into(),
            token_env: Some("WEIR_TEST_NO_SUCH_TOKEN_VAR".into()),
            tls_ca_file: None,
            tls_allow_insecure: false,
        })
        .await
        .err()
        .expect("a missing token variable is an error");
        assert!(
            err.to_string().contains("WEIR_TEST_NO_SUCH_TOKEN_VAR"),
            "{err}"
        );
    }
}
