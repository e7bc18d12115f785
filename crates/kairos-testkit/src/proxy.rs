//! A TCP proxy that can cut a node off its database: a failure mode, for cluster tests.
//!
//! While cut, nothing moves: bytes on open connections are held (as across a network
//! partition, where neither side hears a reset) and new connections are accepted but never
//! forwarded. Restoring closes every held connection, so that clients see them fail and
//! reconnect, and forwards new ones again. Refusing (a database restarting) closes every
//! connection at once and every new one as soon as it is accepted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A running proxy; stops when dropped.
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    refusing: Arc<AtomicBool>,
    /// Bumped on every cut and restore: connections of an earlier generation end.
    generation: watch::Sender<u64>,
    stop: CancellationToken,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let refusing = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let stop = CancellationToken::new();
        let (c, r, g, s) = (
            cut.clone(),
            refusing.clone(),
            generation.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = s.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                if r.load(Ordering::SeqCst) {
                    // Closed at once, as by a server that is down.
                    drop(client);
                    continue;
                }
                let (cut, mut gen_rx, stop) = (c.clone(), g.subscribe(), s.clone());
                tokio::spawn(async move {
                    let born = *gen_rx.borrow_and_update();
                    if cut.load(Ordering::SeqCst) {
                        // Held without an answer until the next restore, then closed.
                        let _ = tokio::select! {
                            _ = stop.cancelled() => Ok(()),
                            r = gen_rx.wait_for(|g| *g != born) => r.map(|_| ()),
                        };
                        return;
                    }
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    forward(client, server, cut, gen_rx, born, stop).await;
                });
            }
        });
        Ok(Self {
            addr,
            cut,
            refusing,
            generation,
            stop,
        })
    }

    /// Cuts every connection off: nothing moves until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Closes every connection, and each new one as soon as it is accepted, until
    /// [`TcpProxy::restore`]: a database restarting, which clients hear of at once.
    pub fn refuse(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.refusing.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Closes every held connection and forwards new ones again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.refusing.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Copies both ways until either side closes, the proxy stops, or a cut (then holds the
/// connection silent until the restore, and closes it).
async fn forward(
    mut client: TcpStream,
    mut server: TcpStream,
    cut: Arc<AtomicBool>,
    mut gen_rx: watch::Receiver<u64>,
    born: u64,
    stop: CancellationToken,
) {
    let ended = tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => true,
        _ = gen_rx.wait_for(|g| *g != born) => false,
    };
    if !ended && cut.load(Ordering::SeqCst) {
        // Partitioned: hold both sockets without moving a byte until the restore.
        let now = *gen_rx.borrow_and_update();
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = gen_rx.wait_for(|g| *g != now) => {}
        }
    }
    let _ = client.shutdown().await;
    let _ = server.shutdown().await;
}
