//! The server certificate, read again from its files every few seconds.

use super::*;

/// The server certificate, as last read from its files.
pub(super) struct Reloading {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) current: RwLock<Arc<CertifiedKey>>,
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
pub(super) type Files = (Vec<u8>, Vec<u8>);

/// What the watcher last saw, so that it acts (and complains) once per
/// change of the files.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) files: Option<Files>,
    pub(super) complaint: Option<String>,
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
pub(super) async fn watch(resolver: Weak<Reloading>, mut seen: Seen, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(resolver) = resolver.upgrade() else {
            return;
        };
        resolver.check(&mut seen).await;
    }
}
