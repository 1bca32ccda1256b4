//! Client connections spread over several generator processes: this machine allows
//! 20,000 open files per process, so beyond that the benchmark starts copies of itself
//! (`switchyard-bench clients …`), each holding a share of the connections, counting
//! and timing what it receives, and streaming its count to the parent on stdout.
//!
//! Child protocol (one line each): `ready <connect seconds>` once connected,
//! `delivered <n>` every 20 ms, and after the parent closes the child's stdin,
//! `hist <json [[value, count], ...]>` with its latency histogram, then exit.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

use crate::fanout::{spawn_readers, Latencies};
use crate::{open_clients_at, Target};

/// The connections held by other processes.
#[derive(Default)]
pub(crate) struct Remote {
    children: Vec<RemoteChild>,
    /// The connection ids the children hold (for the expected count per channel).
    pub(crate) ids: Vec<usize>,
}

struct RemoteChild {
    child: Child,
    stdin: Option<ChildStdin>,
    delivered: Arc<AtomicU64>,
    ready: Option<oneshot::Receiver<Duration>>,
    hist: Option<oneshot::Receiver<Vec<(u64, u64)>>>,
}

/// Splits `ids` into `procs` parts: the first for this process, the rest for children.
pub(crate) fn split(ids: Range<usize>, procs: usize) -> Vec<Range<usize>> {
    let procs = procs.max(1);
    let n = ids.len();
    let share = n.div_ceil(procs);
    (0..procs)
        .map(|k| (ids.start + (k * share).min(n))..(ids.start + ((k + 1) * share).min(n)))
        .collect()
}

impl Remote {
    /// Starts one child per range; each connects its share while the caller connects
    /// its own. `await_ready` returns the slowest child's connect time.
    pub(crate) fn spawn(
        addr: SocketAddr,
        target: Target,
        parts: &[Range<usize>],
        channels: usize,
        sources: &[IpAddr],
        subscribe: bool,
    ) -> Remote {
        let mut remote = Remote::default();
        let exe = std::env::current_exe().expect("current exe");
        for ids in parts {
            if ids.is_empty() {
                continue;
            }
            remote.ids.extend(ids.clone());
            let mut cmd = Command::new(&exe);
            cmd.arg("clients")
                .arg("--addr")
                .arg(addr.to_string())
                .arg("--target")
                .arg(format!("{target:?}").to_lowercase())
                .arg("--from")
                .arg(ids.start.to_string())
                .arg("--to")
                .arg(ids.end.to_string())
                .arg("--channels")
                .arg(channels.to_string());
            if !sources.is_empty() {
                let list: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
                cmd.arg("--sources").arg(list.join(","));
            }
            if !subscribe {
                cmd.arg("--no-subscribe");
            }
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn generator process");
            let stdout = child.stdout.take().expect("piped stdout");
            let stdin = child.stdin.take();
            let delivered = Arc::new(AtomicU64::new(0));
            let (ready_tx, ready) = oneshot::channel();
            let (hist_tx, hist) = oneshot::channel();
            let counter = delivered.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                let mut ready_tx = Some(ready_tx);
                let mut hist_tx = Some(hist_tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    let (kind, rest) = line.split_once(' ').unwrap_or((&line, ""));
                    match kind {
                        "ready" => {
                            let secs = rest.parse().unwrap_or(0.0);
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(Duration::from_secs_f64(secs));
                            }
                        }
                        "delivered" => counter.store(rest.parse().unwrap_or(0), Ordering::Relaxed),
                        "hist" => {
                            let pairs = serde_json::from_str(rest).unwrap_or_default();
                            if let Some(tx) = hist_tx.take() {
                                let _ = tx.send(pairs);
                            }
                        }
                        _ => {}
                    }
                }
            });
            remote.children.push(RemoteChild {
                child,
                stdin,
                delivered,
                ready: Some(ready),
                hist: Some(hist),
            });
        }
        remote
    }

    pub(crate) async fn await_ready(&mut self) -> Duration {
        let mut slowest = Duration::ZERO;
        for c in &mut self.children {
            if let Some(rx) = c.ready.take() {
                let took = rx
                    .await
                    .expect("a generator process failed to connect its share");
                slowest = slowest.max(took);
            }
        }
        slowest
    }

    /// Takes over another set of children (shares of other nodes' connections).
    pub(crate) fn absorb(&mut self, other: Remote) {
        self.children.extend(other.children);
        self.ids.extend(other.ids);
    }

    pub(crate) fn processes(&self) -> usize {
        self.children.len()
    }

    pub(crate) fn delivered(&self) -> u64 {
        self.children
            .iter()
            .map(|c| c.delivered.load(Ordering::Relaxed))
            .sum()
    }

    /// Ends the children and adds their latencies to `into`.
    pub(crate) async fn finish(&mut self, into: &mut Histogram<u64>) {
        for c in &mut self.children {
            drop(c.stdin.take());
            if let Some(rx) = c.hist.take() {
                if let Ok(Ok(pairs)) = tokio::time::timeout(Duration::from_secs(10), rx).await {
                    for (v, n) in pairs {
                        let _ = into.record_n(v, n);
                    }
                }
            }
            let _ = c.child.wait().await;
        }
    }
}

/// The child's side: connect, report, count and time deliveries until stdin closes.
pub(crate) async fn run_child(
    addr: SocketAddr,
    target: Target,
    ids: Range<usize>,
    channels: usize,
    sources: &[IpAddr],
    subscribe: bool,
) {
    let (clients, took) = open_clients_at(addr, target, ids, channels, sources, subscribe).await;
    println!("ready {}", took.as_secs_f64());
    let delivered = Arc::new(AtomicU64::new(0));
    let lat = Latencies::default();
    let readers = spawn_readers(clients, &delivered, &lat);
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            r = stdin.read(&mut sink) => {
                if matches!(r, Ok(0) | Err(_)) {
                    break;
                }
            }
            _ = tick.tick() => println!("delivered {}", delivered.load(Ordering::Relaxed)),
        }
    }
    println!("delivered {}", delivered.load(Ordering::Relaxed));
    for r in readers {
        r.abort();
    }
    let h = lat.merged();
    let pairs: Vec<(u64, u64)> = h
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    println!("hist {}", serde_json::to_string(&pairs).unwrap_or_default());
}
