//! Optional TLS on Weir's ports, with certificates read from PEM files and
//! reloaded when the files change.
//!
//! Serving: [`ServerTls`] turns a bound `TcpListener` into a stream of TLS
//! connections ([`TlsIncoming`]) that tonic serves
//! (`serve_with_incoming_shutdown`) and axum serves (`axum::serve`: it is
//! an `axum::serve::Listener`). The handshake happens before a connection
//! reaches either, so a plain HTTP request or a plain gRPC call to a TLS
//! port gets no answer: the connection is closed after a failed handshake.
//! Both ALPN protocols are offered (`h2`, `http/1.1`): the same port may
//! serve gRPC and plain HTTP/1.1 (the worker's `/metrics`, the REST API).
//!
//! Why our own listener rather than tonic's `ServerTlsConfig`: tonic takes
//! one fixed identity, and certificates are rotated under a running process
//! (cert-manager renews them in a Kubernetes Secret; the kubelet swaps the
//! mounted files through a symlink). The certificate is chosen per
//! handshake by a [`ResolvesServerCert`] that a background task keeps up to
//! date by reading the files every few seconds ([`RELOAD_EVERY`]): polling
//! the contents, not inotify, because a symlink swap does not touch the
//! watched paths and Secret volumes are known to lose inotify events. New
//! files that do not parse, or whose key does not fit the certificate, are
//! refused with a warning naming the file, and the current certificate
//! stays.
//!
//! Dialing: a [`Dialer`] makes tonic endpoints. `https://host:port` dials
//! TLS, `http://host:port` plain, and a bare `host:port` (what workers
//! advertise to each other, what `--peers` lists) dials TLS when the
//! process was given TLS settings: in a TLS cluster every process serves
//! and dials TLS. Trust is the CA file (`--tls-ca`) when given, the
//! system's roots otherwise. The CA file is read again on each new
//! connection, so a rotated CA is picked up too.
//!
//! Everything runs on rustls with the ring provider, as the rest of the
//! tree (Pulsar, S3, Kubernetes) does.
//!
//! Parts: `reload` (the certificate kept up to date), `listen` (TLS
//! connections for tonic and axum), `dial` (outgoing connections).

mod dial;
mod listen;
mod reload;
#[cfg(test)]
mod tests;

pub use dial::{client_config, Dialer};
pub use listen::*;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Once, PoisonError, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// A server-side TLS connection.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// How often the certificate files are read for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// How long a client may take over its handshake (a silent client must
/// not hold a task forever).
const HANDSHAKE_PATIENCE: Duration = Duration::from_secs(10);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{} is not a usable private key for {}: {message}", key.display(), cert.display())]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("TLS settings: {0}")]
    Config(String),
    #[error("invalid address `{address}`: {message}")]
    Address { address: String, message: String },
}

/// The TLS settings of one process, as its flags give them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate chain (PEM), served on every port of the process.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA (PEM) that peers' certificates are checked against when this
    /// process dials them; none: the system's roots.
    pub ca: Option<PathBuf>,
}

/// What a process does with TLS: serve it (with its certificate) and/or
/// dial it. The default is neither.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// Serve TLS on every port (none: plain).
    pub server: Option<ServerTls>,
    /// How to dial peers.
    pub dial: Dialer,
}

impl Tls {
    /// No TLS: serve and dial plain.
    pub fn none() -> Self {
        Tls::default()
    }

    /// Serve with `config`'s certificate and dial TLS trusting its CA:
    /// reads and checks every file now (errors name the file).
    pub fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        Ok(Tls {
            server: Some(ServerTls::load(&config.cert, &config.key)?),
            dial: Dialer::tls(config.ca.as_deref())?,
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain and key in `cert_pem` and `key_pem` (read from
/// `cert` and `key`), checked to belong together.
fn certified_key(
    cert: &Path,
    key: &Path,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(cert, cert_pem)?;
    let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Invalid {
        path: key.to_owned(),
        message: format!("no private key in PEM form ({e})"),
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| TlsError::KeyMismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        message: e.to_string(),
    })
}

/// The certificates of a PEM file (at least one).
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |message: String| TlsError::Invalid {
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a PEM certificate file ({e})")))?;
    if chain.is_empty() {
        return Err(invalid(
            "no PEM certificate (BEGIN CERTIFICATE) in it".into(),
        ));
    }
    Ok(chain)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}
