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
