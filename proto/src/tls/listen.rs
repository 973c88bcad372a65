//! TLS connections from a bound listener, for tonic and axum.

use super::*;

use super::reload::{watch, Files, Reloading, Seen};

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
