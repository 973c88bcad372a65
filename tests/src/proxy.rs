//! A fault-injecting TCP proxy on loopback, for network partitions in
//! tests.
//!
//! Clients connect to the proxy's port; it forwards every connection to
//! its target. [`FaultProxy::partition`] stops forwarding in both
//! directions while connections stay open — as a cut network does: nothing
//! is lost or refused, it just stops arriving, and the senders' buffers
//! fill — until [`FaultProxy::heal`]. [`FaultProxy::reset`] closes every
//! connection at once. Only 127.0.0.1 is ever bound or dialled.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

/// How long a pump waits for data before it looks at the proxy's state.
const POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Shared {
    /// Forwarding is stopped.
    cut: AtomicBool,
    /// Bumped by a reset: connections of an older epoch close.
    epoch: AtomicU64,
    /// The proxy is dropped: everything stops.
    closed: AtomicBool,
}

/// A running proxy; dropping it closes its port and connections.
pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub fn start(target: SocketAddr) -> FaultProxy {
        assert!(target.ip().is_loopback(), "tests stay on loopback");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || accept_loop(listener, target, s));
        FaultProxy { port, shared }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops forwarding (both ways, every connection, new ones too).
    pub fn partition(&self) {
        self.shared.cut.store(true, SeqCst);
    }

    /// Forwards again what waited.
    pub fn heal(&self) {
        self.shared.cut.store(false, SeqCst);
    }

    /// Closes every open connection (new ones are accepted).
    pub fn reset(&self) {
        self.shared.epoch.fetch_add(1, SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.closed.store(true, SeqCst);
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    while !shared.closed.load(SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                // As the endpoints do: a forwarded small message (a raft
                // heartbeat) must not wait for Nagle's algorithm.
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let epoch = shared.epoch.load(SeqCst);
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let s = shared.clone();
                    std::thread::spawn(move || pump(from, to, s, epoch));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Copies `from` to `to` until either closes, the proxy resets or closes.
/// While the network is cut it reads nothing (so the sender's buffers fill
/// as behind a real partition).
fn pump(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>, epoch: u64) {
    let _ = from.set_nonblocking(false);
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if shared.closed.load(SeqCst) || shared.epoch.load(SeqCst) != epoch {
            break;
        }
        if shared.cut.load(SeqCst) {
            std::thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_holds_back_while_partitioned_and_resets() {
        let server = TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = server.local_addr().expect("addr");
        std::thread::spawn(move || {
            for conn in server.incoming() {
                let Ok(mut c) = conn else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = FaultProxy::start(target);
        let mut c = TcpStream::connect(proxy.addr()).expect("connect");
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut buf = [0u8; 5];
        c.write_all(b"hello").expect("write");
        c.read_exact(&mut buf).expect("echo");
        assert_eq!(&buf, b"hello");

        proxy.partition();
        std::thread::sleep(Duration::from_millis(100));
        c.write_all(b"again").expect("write");
        assert!(
            c.read_exact(&mut buf).is_err(),
            "nothing crosses a partition"
        );
        proxy.heal();
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.read_exact(&mut buf).expect("what waited arrives");
        assert_eq!(&buf, b"again");

        proxy.reset();
        std::thread::sleep(Duration::from_millis(100));
        let mut rest = Vec::new();
        let read = c.read_to_end(&mut rest);
        assert!(
            matches!(read, Ok(0)) || read.is_err(),
            "the connection is closed"
        );
    }
}
