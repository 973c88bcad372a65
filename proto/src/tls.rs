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

/// The server certificate, as last read from its files.
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Reloading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloading")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// The contents of the certificate and key files.
type Files = (Vec<u8>, Vec<u8>);

/// What the watcher last saw, so that it acts (and complains) once per
/// change of the files.
#[derive(Default)]
struct Seen {
    files: Option<Files>,
    complaint: Option<String>,
}

impl Reloading {
    /// Reads the files; takes their certificate if they changed and are
    /// valid, keeps the current one (with a warning) if not.
    async fn check(&self, seen: &mut Seen) {
        let files = async {
            let cert = tokio::fs::read(&self.cert)
                .await
                .map_err(|source| TlsError::Read {
                    path: self.cert.clone(),
                    source,
                })?;
            let key = tokio::fs::read(&self.key)
                .await
                .map_err(|source| TlsError::Read {
                    path: self.key.clone(),
                    source,
                })?;
            Ok::<_, TlsError>((cert, key))
        };
        let (cert, key) = match files.await {
            Ok(files) => files,
            Err(e) => {
                let complaint = e.to_string();
                if seen.complaint.as_ref() != Some(&complaint) {
                    tracing::warn!(error = %complaint, "keeping the current TLS certificate: cannot read its files");
                    seen.complaint = Some(complaint);
                }
                return;
            }
        };
        if let Some((c, k)) = &seen.files {
            if *c == cert && *k == key {
                return;
            }
        }
        match certified_key(&self.cert, &self.key, &cert, &key, &self.provider) {
            Ok(certified) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
                seen.complaint = None;
                tracing::info!(cert = %self.cert.display(), "reloaded the TLS certificate");
            }
            Err(e) => {
                tracing::warn!(error = %e, "keeping the current TLS certificate: the new files are not valid");
                seen.complaint = Some(e.to_string());
            }
        }
        seen.files = Some((cert, key));
    }
}

/// Reads the files every `every` while the resolver is in use.
async fn watch(resolver: Weak<Reloading>, mut seen: Seen, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(resolver) = resolver.upgrade() else {
            return;
        };
        resolver.check(&mut seen).await;
    }
}

/// A server's TLS: the reloading certificate and the acceptor using it.
/// Clones share both.
#[derive(Clone)]
pub struct ServerTls {
    resolver: Arc<Reloading>,
    acceptor: TlsAcceptor,
    /// The files as read at startup (the watcher's starting point).
    loaded: Arc<Mutex<Option<Files>>>,
    watching: Arc<Once>,
    every: Duration,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("resolver", &self.resolver)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads `cert` and `key` (errors name the file); they are read again
    /// every [`RELOAD_EVERY`] once serving.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::load_polling(cert, key, RELOAD_EVERY)
    }

    /// [`load`](Self::load), reading the files every `every`.
    pub fn load_polling(cert: &Path, key: &Path, every: Duration) -> Result<Self, TlsError> {
        let provider = provider();
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let certified = certified_key(cert, key, &cert_pem, &key_pem, &provider)?;
        let resolver = Arc::new(Reloading {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider: provider.clone(),
            current: RwLock::new(Arc::new(certified)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            loaded: Arc::new(Mutex::new(Some((cert_pem, key_pem)))),
            watching: Arc::new(Once::new()),
            every,
        })
    }

    /// The TLS connections of `listener`: handshakes run concurrently (a
    /// slow client does not hold up the others) and those that fail (a
    /// plain client, say) are dropped. Starts the file watcher if it does
    /// not run yet. Must be called within a tokio runtime.
    pub fn incoming(&self, listener: TcpListener) -> io::Result<TlsIncoming> {
        let local = listener.local_addr()?;
        self.watching.call_once(|| {
            let files = self
                .loaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let seen = Seen {
                files,
                complaint: None,
            };
            tokio::spawn(watch(Arc::downgrade(&self.resolver), seen, self.every));
        });
        let (sender, connections) = mpsc::channel(64);
        let accepting = tokio::spawn(accept(listener, self.acceptor.clone(), sender));
        Ok(TlsIncoming {
            connections,
            local,
            accepting,
        })
    }
}

/// Accepts TCP connections and hands them on once their handshake is done.
async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin
                // (as axum and tonic do).
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if sender.is_closed() {
            return;
        }
        // Ignored on failure: the connection works without it.
        let _ = tcp.set_nodelay(true);
        let (acceptor, sender) = (acceptor.clone(), sender.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_PATIENCE, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // Closed: the server stopped; the connection goes too.
                    let _ = sender.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed (a plain client?)")
                }
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// A listener's TLS connections: a stream for tonic's
/// `serve_with_incoming_shutdown`, an [`axum::serve::Listener`] for axum.
/// Stops accepting when dropped.
pub struct TlsIncoming {
    connections: mpsc::Receiver<(TlsStream, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl TlsIncoming {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Stream for TlsIncoming {
    type Item = Result<TlsStream, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections
            .poll_recv(cx)
            .map(|next| next.map(|(tls, _)| Ok(tls)))
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // Not before the listener is dropped: the accept task runs
            // until then.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A bound port, serving TLS or plain: a stream of connections for tonic's
/// `serve_with_incoming_shutdown` and an [`axum::serve::Listener`] for
/// axum, so that a server is started the same way either way.
pub struct Listening {
    inner: Inner,
    local: SocketAddr,
}

enum Inner {
    Plain(TcpListener),
    Tls(TlsIncoming),
}

/// `listener`, over TLS when `tls` is set (see [`ServerTls::incoming`]).
/// Accepted connections have `TCP_NODELAY` set (the servers' small
/// messages are latency-bound).
pub fn listen(listener: TcpListener, tls: Option<&ServerTls>) -> io::Result<Listening> {
    let local = listener.local_addr()?;
    let inner = match tls {
        Some(tls) => Inner::Tls(tls.incoming(listener)?),
        None => Inner::Plain(listener),
    };
    Ok(Listening { inner, local })
}

impl Listening {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls(_))
    }
}

impl Stream for Listening {
    type Item = Result<MaybeTls, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.inner {
            Inner::Plain(listener) => listener.poll_accept(cx).map(|accepted| {
                Some(accepted.map(|(tcp, _)| {
                    // Ignored on failure: the connection works without it.
                    let _ = tcp.set_nodelay(true);
                    MaybeTls::Plain(tcp)
                }))
            }),
            Inner::Tls(incoming) => Pin::new(incoming)
                .poll_next(cx)
                .map(|next| next.map(|tls| tls.map(|tls| MaybeTls::Tls(Box::new(tls))))),
        }
    }
}

impl axum::serve::Listener for Listening {
    type Io = MaybeTls;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match &mut self.inner {
            Inner::Plain(listener) => {
                // axum's own accept loop (it retries failed accepts).
                let (tcp, peer) = axum::serve::Listener::accept(listener).await;
                let _ = tcp.set_nodelay(true);
                (MaybeTls::Plain(tcp), peer)
            }
            Inner::Tls(incoming) => {
                let (tls, peer) = axum::serve::Listener::accept(incoming).await;
                (MaybeTls::Tls(Box::new(tls)), peer)
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A connection of a [`Listening`] port.
pub enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Connected for MaybeTls {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            MaybeTls::Plain(tcp) => tcp.connect_info(),
            MaybeTls::Tls(tls) => tls.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How a process dials its peers (coordinator, workers, the other
/// coordinators): plain, or TLS trusting a CA file or the system's roots.
#[derive(Clone, Debug, Default)]
pub struct Dialer(Option<Arc<Trust>>);

#[derive(Debug)]
struct Trust {
    /// None: the system's roots.
    ca: Option<PathBuf>,
    /// The CA file's last valid contents (used when a new read fails).
    last_good: Mutex<Vec<u8>>,
}

impl Dialer {
    /// Dials plain, except `https://` addresses (trusting the system's
    /// roots).
    pub fn plain() -> Self {
        Dialer(None)
    }

    /// Dials TLS, trusting the certificates in `ca` (read and checked
    /// now), or the system's roots.
    pub fn tls(ca: Option<&Path>) -> Result<Self, TlsError> {
        let last_good = match ca {
            Some(path) => {
                let pem = read(path)?;
                certificates(path, &pem)?;
                pem
            }
            None => Vec::new(),
        };
        Ok(Dialer(Some(Arc::new(Trust {
            ca: ca.map(Path::to_owned),
            last_good: Mutex::new(last_good),
        }))))
    }

    /// Whether bare `host:port` addresses are dialed with TLS.
    pub fn is_tls(&self) -> bool {
        self.0.is_some()
    }

    /// `address` as a URL: as given with a scheme, else `https://` when
    /// this dialer dials TLS and `http://` when not.
    pub fn url(&self, address: &str) -> String {
        if address.starts_with("http://") || address.starts_with("https://") {
            address.to_owned()
        } else if self.is_tls() {
            format!("https://{address}")
        } else {
            format!("http://{address}")
        }
    }

    /// An endpoint for `address` ([`url`](Self::url)), with TLS for
    /// `https://`.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, TlsError> {
        let url = self.url(address);
        let invalid = |message: String| TlsError::Address {
            address: address.to_owned(),
            message,
        };
        let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| invalid(error_text(&e)))?;
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        endpoint
            .tls_config(self.client_config())
            .map_err(|e| invalid(error_text(&e)))
    }

    /// tonic's client TLS: the CA file as it is now (as it last was when
    /// it cannot be read, or no longer parses), or the system's roots.
    fn client_config(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new();
        let Some(Trust {
            ca: Some(path),
            last_good,
        }) = self.0.as_deref()
        else {
            return config.with_native_roots();
        };
        let mut last_good = last_good.lock().unwrap_or_else(PoisonError::into_inner);
        match read(path).and_then(|pem| certificates(path, &pem).map(|_| pem)) {
            Ok(pem) => *last_good = pem,
            Err(e) => {
                tracing::warn!(error = %e, "dialing with the CA certificate last read")
            }
        }
        config.ca_certificate(Certificate::from_pem(last_good.clone()))
    }
}

/// An error with its sources (tonic's errors say little at the top).
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A rustls client configuration trusting the certificates of `ca` (for
/// clients other than tonic's: `weir ctl`).
pub fn client_config(ca: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let pem = read(ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca, &pem)? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            path: ca.to_owned(),
            message: e.to_string(),
        })?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio_stream::StreamExt;

    /// A CA and a way to issue server certificates for 127.0.0.1.
    struct Ca(CertifiedIssuer<'static, KeyPair>);

    impl Ca {
        fn new() -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let key = KeyPair::generate().expect("key");
            Ca(CertifiedIssuer::self_signed(params, key).expect("CA"))
        }

        /// `(certificate PEM, key PEM, certificate DER)`.
        fn issue(&self) -> (String, String, Vec<u8>) {
            let key = KeyPair::generate().expect("key");
            let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
            let cert = params.signed_by(&key, &*self.0).expect("sign");
            (cert.pem(), key.serialize_pem(), cert.der().to_vec())
        }
    }

    /// Replaces `path` as the kubelet does: a new file renamed over it.
    fn replace(path: &Path, contents: &str) {
        let new = path.with_extension("new");
        std::fs::write(&new, contents).expect("write");
        std::fs::rename(&new, path).expect("rename");
    }

    /// Serves TLS on a loopback port (accepting connections and holding
    /// them until the client goes).
    async fn serve(tls: &ServerTls) -> (SocketAddr, TlsIncoming) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let incoming = tls.incoming(listener).expect("incoming");
        (incoming.local_addr(), incoming)
    }

    /// The certificate the server at `addr` presents (DER).
    async fn served(ca: &Path, addr: SocketAddr) -> Vec<u8> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca).expect("ca")));
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let tls = connector.connect(name, tcp).await.expect("handshake");
        tls.get_ref().1.peer_certificates().expect("certificates")[0].to_vec()
    }

    #[tokio::test]
    async fn a_replaced_certificate_is_served_and_invalid_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key, ca_path) = (
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            dir.path().join("ca.crt"),
        );
        let ca = Ca::new();
        std::fs::write(&ca_path, ca.0.pem()).expect("ca");
        let (a_cert, a_key, a_der) = ca.issue();
        replace(&cert, &a_cert);
        replace(&key, &a_key);

        let tls = ServerTls::load_polling(&cert, &key, Duration::from_millis(50)).expect("load");
        let (addr, mut incoming) = serve(&tls).await;
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(c) = incoming.next().await {
                held.push(c);
            }
        });
        assert_eq!(served(&ca_path, addr).await, a_der);

        let (b_cert, b_key, b_der) = ca.issue();
        replace(&cert, &b_cert);
        replace(&key, &b_key);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while served(&ca_path, addr).await != b_der {
            assert!(tokio::time::Instant::now() < deadline, "B never served");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Garbage, then a key that does not fit: B stays.
        replace(&cert, "not a certificate");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(served(&ca_path, addr).await, b_der);
        replace(&cert, &a_cert);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(served(&ca_path, addr).await, b_der);
        std::fs::remove_file(&key).expect("remove");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(served(&ca_path, addr).await, b_der);

        // Valid again: taken.
        replace(&key, &a_key);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while served(&ca_path, addr).await != a_der {
            assert!(
                tokio::time::Instant::now() < deadline,
                "A never served again"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[test]
    fn invalid_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new();
        let (a_cert, a_key, _) = ca.issue();
        let (_, b_key, _) = ca.issue();
        let (cert, key, other) = (
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            dir.path().join("other.key"),
        );
        std::fs::write(&cert, &a_cert).expect("write");
        std::fs::write(&key, &a_key).expect("write");
        std::fs::write(&other, &b_key).expect("write");
        assert!(ServerTls::load(&cert, &key).is_ok());

        let missing = dir.path().join("missing.key");
        let e = ServerTls::load(&cert, &missing).expect_err("missing");
        assert!(e.to_string().contains("missing.key"), "{e}");

        let e = ServerTls::load(&key, &key).expect_err("a key as certificate");
        assert!(e.to_string().contains("tls.key"), "{e}");

        let e = ServerTls::load(&cert, &cert).expect_err("a certificate as key");
        assert!(e.to_string().contains("tls.crt"), "{e}");

        let e = ServerTls::load(&cert, &other).expect_err("another key");
        assert!(
            e.to_string().contains("other.key") && e.to_string().contains("tls.crt"),
            "{e}"
        );

        let e = Dialer::tls(Some(&key)).expect_err("a key as CA");
        assert!(e.to_string().contains("tls.key"), "{e}");
    }

    #[test]
    fn bare_addresses_follow_the_dialer_and_schemes_win() {
        let plain = Dialer::plain();
        let tls = Dialer::tls(None).expect("tls");
        assert_eq!(plain.url("w-0:7071"), "http://w-0:7071");
        assert_eq!(tls.url("w-0:7071"), "https://w-0:7071");
        assert_eq!(tls.url("http://w-0:7071"), "http://w-0:7071");
        assert_eq!(plain.url("https://w-0:7071"), "https://w-0:7071");
        assert!(tls.endpoint("w-0:7071").is_ok());
        assert!(plain.endpoint("https://w-0:7071").is_ok());
        assert!(plain.endpoint("bad address").is_err());
    }
}
