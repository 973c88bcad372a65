//! Outgoing connections: plain or TLS, as the address and settings say.

use super::*;
use weir_common::error_chain::error_chain;

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
        let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| invalid(error_chain(&e)))?;
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        endpoint
            .tls_config(self.client_config())
            .map_err(|e| invalid(error_chain(&e)))
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
