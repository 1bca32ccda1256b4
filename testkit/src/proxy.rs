//! A TCP proxy between a node and Redis that can go silent on the connections it
//! holds (TCP stays up, nothing is forwarded) while forwarding new ones: the failure
//! the liveness canary exists for.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub addr: SocketAddr,
    /// While set, new connections are accepted and dropped at once.
    refuse: Arc<std::sync::atomic::AtomicBool>,
    /// While set, new connections are accepted and held, never forwarded: a peer
    /// that is unreachable without saying so.
    blackhole: Arc<std::sync::atomic::AtomicBool>,
    /// Connections opened in a generation below this one are frozen.
    frozen_below: Arc<AtomicU64>,
    generation: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let frozen_below = Arc::new(AtomicU64::new(0));
        let generation = Arc::new(AtomicU64::new(0));
        let refuse = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let blackhole = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (f, g, r, b) = (
            frozen_below.clone(),
            generation.clone(),
            refuse.clone(),
            blackhole.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if r.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                if b.load(Ordering::SeqCst) {
                    tokio::spawn(async move {
                        let mut sink = [0u8; 4096];
                        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
                    });
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let gen = g.load(Ordering::SeqCst);
                let f = f.clone();
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, gen, f.clone()));
                tokio::spawn(pump(sr, cw, gen, f));
            }
        });
        Proxy {
            addr,
            refuse,
            blackhole,
            frozen_below,
            generation,
            task,
        }
    }

    /// Refuse (or again accept) new connections.
    pub fn refuse_new(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }

    /// New connections are accepted and held without an answer (or forwarded again).
    pub fn blackhole_new(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }

    /// Every connection open now stops forwarding (and stays open); new ones work.
    pub fn freeze_existing(&self) {
        let next = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.frozen_below.store(next, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    gen: u64,
    frozen_below: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16384];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if gen < frozen_below.load(Ordering::SeqCst) {
            // Silently swallow: the peer sees an open, idle connection forever.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
