//! One task per connection: reads frames when the socket is readable, writes what the
//! outbox holds when it is writable, and keeps the timers (ping, pong timeout, auth
//! timeout, token expiry, write timeout). Idle, it holds no read or write buffer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant as StdInstant;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant, Sleep};

use super::codec::{self, CodecError, Incoming, Reader};
use super::Setup;
use crate::hub::{ConnHandle, Item, Outbox};
use crate::metrics::DISCONNECTS;
use crate::node::Node;
use crate::protocol::{CloseCode, ServerMessage};
use crate::session::Session;

/// Stop pulling from the outbox while this much is waiting for the socket: the
/// outbox then fills and a reader that stays stalled becomes a slow consumer.
const HIGH_WATER: usize = 256 * 1024;
/// Items moved from the outbox per pass, so one connection cannot hog a worker.
const DRAIN_BATCH: usize = 256;
/// Moves up to a batch of publications out of the outbox (pointers only, under its
/// lock) and frames them into `buf` after the lock is released. Returns how many,
/// the acceptance time of the oldest, and a control item that ended the batch.
fn frame_batch(outbox: &Outbox, buf: &mut Vec<u8>) -> (usize, Option<StdInstant>, Option<Item>) {
    thread_local! {
        static STAGED: std::cell::RefCell<Vec<(Bytes, Option<StdInstant>)>> =
            std::cell::RefCell::new(Vec::with_capacity(DRAIN_BATCH));
    }
    STAGED.with(|cell| {
        let mut staged = cell.borrow_mut();
        // Empty already, unless a panic interrupted a previous batch on this thread.
        staged.clear();
        let control = outbox.drain_data(DRAIN_BATCH, &mut staged);
        let n = staged.len();
        // One reservation for the batch: header (at most 10 bytes) plus payload each.
        buf.reserve(staged.iter().map(|(b, _)| b.len() + 10).sum());
        let oldest = staged.iter().find_map(|(_, a)| *a);
        for (bytes, _) in staged.drain(..) {
            codec::put_text(buf, &bytes);
        }
        (n, oldest, control)
    })
}

/// How long a closing connection waits for the client's close before dropping TCP.
const LINGER: Duration = Duration::from_secs(2);

/// What woke the connection's task.
enum Event {
    Outbox,
    Readable,
    Writable,
    Timer,
    Failed,
}

/// How the connection ended, for the disconnect metric.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ended {
    /// We sent a close frame with this code.
    Closed(u16),
    /// The client closed (close frame, with its code, or EOF).
    ClientClosed(u16),
    /// Dropped without a close handshake (pong timeout, write timeout, I/O error).
    Dropped(&'static str),
}

pub(super) struct Closing {
    code: u16,
    deadline: Instant,
}

pub(super) struct Conn {
    pub(super) node: Arc<Node>,
    pub(super) handle: Arc<ConnHandle>,
    stream: TcpStream,
    reader: Reader,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Acceptance time of the oldest publication waiting in `wbuf`.
    oldest: Option<StdInstant>,
    unflushed_msgs: u64,
    write_stalled: Option<Instant>,
    last_seen: Instant,
    next_ping: Instant,
    timer: Pin<Box<Sleep>>,
    timer_at: Instant,
    closing: Option<Closing>,
    /// Set once a close is requested: later client frames are not acted on.
    stop_reading: bool,
    /// The last pull stopped at the high-water mark with items still queued.
    outbox_pending: bool,
    pub(super) session: Session,
}

pub(super) async fn run(
    node: Arc<Node>,
    handle: Arc<ConnHandle>,
    stream: TcpStream,
    leftover: Vec<u8>,
    setup: Setup,
) {
    let _ = stream.set_nodelay(true);
    let now = Instant::now();
    let limits = &node.config.limits;
    let session = Session::new(
        now.into_std(),
        node.config.auth.timeout,
        (limits.client_rate, limits.client_burst),
        setup.route.clone(),
    );
    let far = now + Duration::from_secs(3600);
    let mut conn = Conn {
        stream,
        reader: Reader::default(),
        wbuf: Vec::new(),
        wpos: 0,
        oldest: None,
        unflushed_msgs: 0,
        write_stalled: None,
        last_seen: now,
        next_ping: now + limits.ping_interval,
        timer: Box::pin(tokio::time::sleep_until(far)),
        timer_at: far,
        closing: None,
        stop_reading: false,
        outbox_pending: false,
        session,
        node: node.clone(),
        handle,
    };
    // A bug must not leak the connection's registrations: cleanup runs after a panic too.
    let ended = std::panic::AssertUnwindSafe(conn.drive(setup, leftover))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!("connection task panicked; connection dropped");
            Ended::Dropped("panic")
        });
    conn.finish(ended).await;
}

impl Conn {
    async fn drive(&mut self, setup: Setup, leftover: Vec<u8>) -> Ended {
        // Every protocol-level await is boxed: the connection's own future then stays
        // small while it idles (the per-connection memory budget), and a message pays
        // one allocation only when it is processed.
        Box::pin(self.start(setup)).await;
        if !leftover.is_empty() {
            if let Err(e) = self.feed(&leftover).await {
                return e;
            }
        }
        drop(leftover);
        loop {
            if let Err(e) = self.pull_outbox().await {
                return e;
            }
            if let Err(e) = self.flush() {
                return e;
            }
            if let Some(c) = &self.closing {
                if self.wpos >= self.wbuf.len() {
                    return self.linger(c.code).await;
                }
            }
            let deadline = self.next_deadline();
            if deadline != self.timer_at {
                self.timer_at = deadline;
                self.timer.as_mut().reset(deadline);
            }
            let room = self.wbuf.len() - self.wpos < HIGH_WATER;
            let can_pull = self.closing.is_none() && room;
            if can_pull && self.outbox_pending {
                // Items were left behind at the high-water mark and no wake-up will come
                // for them (the queue never went empty): pull them now.
                continue;
            }
            let want_write = self.wpos < self.wbuf.len();
            // Reading stops while our replies pile up unread: the client is not reading.
            let can_read = !self.stop_reading && room;
            // One hand-written wait instead of `select!`: it polls the socket's own
            // readiness slots and the outbox's waker slot, registering nothing else,
            // which keeps a wake-up cheap when a fan-out wakes every connection.
            let event = std::future::poll_fn(|cx| {
                if can_pull && self.handle.outbox.poll_ready(cx).is_ready() {
                    return Poll::Ready(Event::Outbox);
                }
                if want_write {
                    if let Poll::Ready(r) = self.stream.poll_write_ready(cx) {
                        return Poll::Ready(if r.is_ok() {
                            Event::Writable
                        } else {
                            Event::Failed
                        });
                    }
                }
                if can_read {
                    if let Poll::Ready(r) = self.stream.poll_read_ready(cx) {
                        return Poll::Ready(if r.is_ok() {
                            Event::Readable
                        } else {
                            Event::Failed
                        });
                    }
                }
                if self.timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Timer);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Outbox | Event::Writable => {}
                Event::Failed => return Ended::Dropped("io"),
                Event::Readable => {
                    if let Err(e) = self.read().await {
                        return e;
                    }
                }
                Event::Timer => {
                    if let Err(e) = self.on_timer().await {
                        return e;
                    }
                }
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let limits = &self.node.config.limits;
        let mut d = self.next_ping.min(self.last_seen + limits.pong_timeout);
        if let Some(t) = self.write_stalled {
            d = d.min(t + limits.write_timeout);
        }
        if let Some(c) = &self.closing {
            d = d.min(c.deadline);
        }
        if let Some(due) = self.handle.outbox.next_due() {
            d = d.min(Instant::from_std(due));
        }
        if !self.stop_reading {
            if let Some(t) = self.session.deadline() {
                d = d.min(Instant::from_std(t));
            }
        }
        d
    }

    async fn on_timer(&mut self) -> Result<(), Ended> {
        let now = Instant::now();
        let limits = &self.node.config.limits;
        if now >= self.last_seen + limits.pong_timeout {
            return Err(Ended::Dropped("pong_timeout"));
        }
        if self
            .write_stalled
            .is_some_and(|t| now >= t + limits.write_timeout)
        {
            return Err(Ended::Dropped("write_timeout"));
        }
        if self.closing.as_ref().is_some_and(|c| now >= c.deadline) {
            return Err(Ended::Dropped("write_timeout"));
        }
        self.handle.outbox.release_due(now.into_std());
        if now >= self.next_ping {
            self.handle.outbox.shrink_if_idle();
            codec::put_ping(&mut self.wbuf);
            self.next_ping = now + limits.ping_interval;
        }
        if !self.stop_reading {
            if let Some(code) = self.session.on_timer(now.into_std()) {
                self.close(code, None);
            }
        }
        Ok(())
    }

    /// Reads what the socket has, then handles every complete message.
    async fn read(&mut self) -> Result<(), Ended> {
        let mut buf = Vec::new();
        let eof = self.read_available(&mut buf)?;
        if !buf.is_empty() {
            self.feed(&buf).await?;
        }
        if eof {
            return Err(Ended::ClientClosed(1006));
        }
        Ok(())
    }

    /// Non-blocking reads into a stack buffer; returns whether the peer closed. The
    /// bytes are copied out only when there are some, so idle sockets cost nothing.
    fn read_available(&mut self, out: &mut Vec<u8>) -> Result<bool, Ended> {
        let mut chunk = [0u8; 4096];
        for _ in 0..16 {
            match self.stream.try_read(&mut chunk) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    out.extend_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(Ended::Dropped("io")),
            }
        }
        Ok(false)
    }

    async fn feed(&mut self, data: &[u8]) -> Result<(), Ended> {
        self.last_seen = Instant::now();
        let max = self.node.config.limits.max_message_size;
        let mut msgs = Vec::new();
        let parsed = self.reader.feed(data, max, &mut msgs);
        for m in msgs {
            if self.stop_reading {
                break;
            }
            match m {
                Incoming::Text(text) => Box::pin(self.on_text(text)).await,
                Incoming::Binary => self.on_binary(),
                Incoming::Ping(data) => {
                    if self.control_frame_allowed() {
                        codec::put_pong(&mut self.wbuf, &data)
                    }
                }
                Incoming::Pong => {}
                Incoming::Close(code) => {
                    // Echo the close and end: the client started the handshake.
                    // 1005, 1006 and 1015 must never be sent; unknown codes become 1000.
                    let code = code
                        .filter(|c| matches!(c, 1000..=1003 | 1007..=1011 | 3000..=4999))
                        .unwrap_or(1000);
                    codec::put_close(&mut self.wbuf, code, "");
                    let _ = self.flush();
                    return Err(Ended::ClientClosed(code));
                }
            }
        }
        if let Err(e) = parsed {
            let code = match e {
                CodecError::TooBig => CloseCode::MessageTooBig,
                CodecError::InvalidUtf8 => CloseCode::InvalidUtf8,
                CodecError::Protocol(_) => CloseCode::ProtocolError,
            };
            self.close(code, None);
        }
        Ok(())
    }

    /// Queues a reply or event for this connection (in order with publications).
    pub(super) fn send(&self, bytes: Bytes) {
        self.handle.outbox.push_data(bytes, None);
    }

    /// Asks to close: `disconnect` and the close frame follow what is already queued.
    pub(super) fn close(&mut self, code: CloseCode, reason: Option<String>) {
        self.stop_reading = true;
        self.handle.outbox.push_control(Item::Close(code, reason));
    }

    fn begin_close(&mut self, code: CloseCode, reason: Option<String>) {
        if self.closing.is_some() {
            return;
        }
        let reason = reason.unwrap_or_else(|| code.reason().to_owned());
        let msg = ServerMessage::Disconnect {
            code,
            reason: &reason,
        }
        .to_bytes(None);
        codec::put_text(&mut self.wbuf, &msg);
        codec::put_close(&mut self.wbuf, code.code(), &reason);
        self.stop_reading = true;
        self.closing = Some(Closing {
            code: code.code(),
            deadline: Instant::now() + self.node.config.limits.write_timeout,
        });
    }

    /// Moves queued items into the write buffer and runs queued control items.
    async fn pull_outbox(&mut self) -> Result<(), Ended> {
        if self.closing.is_some() {
            return Ok(());
        }
        self.outbox_pending = false;
        loop {
            if self.wbuf.len() - self.wpos >= HIGH_WATER {
                self.outbox_pending = true;
                return Ok(());
            }
            let (n, control) = if self.wpos == self.wbuf.len() {
                self.pull_direct()?
            } else {
                // Bytes are already waiting: queue behind them, in order.
                let (n, oldest, control) = frame_batch(&self.handle.outbox, &mut self.wbuf);
                self.unflushed_msgs += n as u64;
                if self.oldest.is_none() {
                    self.oldest = oldest;
                }
                (n, control)
            };
            match control {
                // Fewer than a batch and no control item: the queue is empty now, so
                // skip the second (empty) look a loop would take.
                None if n < DRAIN_BATCH => return Ok(()),
                None => {}
                Some(Item::Data(..) | Item::Conflated(_)) => {}
                Some(Item::Subscribe(_) | Item::Unsubscribe(_)) if self.stop_reading => {}
                Some(Item::Subscribe(ch)) => Box::pin(self.server_subscribe(ch)).await,
                Some(Item::Unsubscribe(ch)) => self.server_unsubscribe(ch),
                Some(Item::Close(code, reason)) => {
                    if code == CloseCode::SlowConsumer {
                        tracing::debug!(conn = %self.handle.id, "slow consumer");
                    }
                    self.begin_close(code, reason);
                    return Ok(());
                }
            }
        }
    }

    /// The fan-out fast path: frames queued publications into this thread's scratch
    /// buffer and writes them at once; only what the socket does not take is copied
    /// into the connection's own buffer. No allocation when the socket keeps up.
    fn pull_direct(&mut self) -> Result<(usize, Option<Item>), Ended> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let outbox = &self.handle.outbox;
        let stream = &self.stream;
        let wbuf = &mut self.wbuf;
        let (n, oldest, control, written_all, failed) = SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            scratch.clear();
            let (n, oldest, control) = frame_batch(outbox, &mut scratch);
            let mut pos = 0;
            let mut failed = false;
            while pos < scratch.len() {
                match stream.try_write(&scratch[pos..]) {
                    Ok(0) => {
                        failed = true;
                        break;
                    }
                    Ok(k) => pos += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            let written_all = pos == scratch.len();
            if !written_all && !failed {
                wbuf.extend_from_slice(&scratch[pos..]);
            }
            // A burst may have grown it; the thread keeps a modest buffer only.
            if scratch.capacity() > 256 * 1024 {
                *scratch = Vec::new();
            }
            (n, oldest, control, written_all, failed)
        });
        let count = n as u64;
        if failed {
            return Err(Ended::Dropped("io"));
        }
        if written_all {
            if count > 0 {
                let m = &self.node.metrics;
                m.messages_out.increment(count);
                if let Some(t) = oldest {
                    m.delivery_latency.record(t.elapsed().as_secs_f64());
                }
            }
        } else {
            self.write_stalled.get_or_insert_with(Instant::now);
            self.unflushed_msgs += count;
            if self.oldest.is_none() {
                self.oldest = oldest;
            }
        }
        Ok((n, control))
    }

    /// Writes as much as the socket takes now, without waiting.
    fn flush(&mut self) -> Result<(), Ended> {
        while self.wpos < self.wbuf.len() {
            match self.stream.try_write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(Ended::Dropped("io")),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_stalled.get_or_insert_with(Instant::now);
                    return Ok(());
                }
                Err(_) => return Err(Ended::Dropped("io")),
            }
        }
        if self.wpos > 0 {
            self.wpos = 0;
            // Released, not kept: an idle connection holds no buffer. A busy one pays one
            // allocation per written batch, next to a syscall that costs far more.
            self.wbuf = Vec::new();
            let m = &self.node.metrics;
            if self.unflushed_msgs > 0 {
                m.messages_out.increment(self.unflushed_msgs);
                self.unflushed_msgs = 0;
            }
            if let Some(t) = self.oldest.take() {
                m.delivery_latency.record(t.elapsed().as_secs_f64());
            }
        }
        self.write_stalled = None;
        Ok(())
    }

    /// After our close frame is out: half-close and wait briefly for the client's
    /// close or EOF, so unread client data does not turn our FIN into a reset that
    /// could discard the frames we just wrote.
    async fn linger(&mut self, code: u16) -> Ended {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.stream).await;
        let deadline = Instant::now() + LINGER;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.readable()).await {
                Ok(Ok(())) if self.discard_input() => continue,
                _ => break,
            }
        }
        Ended::Closed(code)
    }

    /// Reads and drops what the client sent after our close; false at EOF or error.
    fn discard_input(&self) -> bool {
        let mut buf = [0u8; 1024];
        match self.stream.try_read(&mut buf) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        }
    }

    async fn finish(&mut self, ended: Ended) {
        let code = match ended {
            Ended::Closed(c) | Ended::ClientClosed(c) => c,
            Ended::Dropped(why) => {
                tracing::debug!(conn = %self.handle.id, why, "connection dropped");
                1006
            }
        };
        self.node
            .metrics
            .counter(DISCONNECTS, "code", disconnect_label(code))
            .increment(1);
        let who = self.session.counted_user.clone();
        // The hub lets go at once; the broker cleanup is the janitor's, with no
        // socket waiting on it (the socket itself is dropped with this task).
        self.session_end();
        if let Some(who) = who.as_deref() {
            // After the `unsubscribe` events of its channels.
            self.node.emit(
                crate::config::EventKind::Disconnect,
                self.handle.id,
                Some(who),
                None,
                Some(code),
            );
        }
        self.node.hub.unregister(&self.handle);
    }
}

/// The `switchyard_disconnects_total` label: a code of the close table, or a bucket.
/// Clients choose their own close codes (3000–4999): as raw labels they would grow
/// the metric by up to 2,000 series.
fn disconnect_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1005 => "1005",
        1006 => "1006",
        1007 => "1007",
        1009 => "1009",
        1011 => "1011",
        4001 => "4001",
        4003 => "4003",
        4008 => "4008",
        4009 => "4009",
        4010 => "4010",
        4011 => "4011",
        4012 => "4012",
        4000..=4999 => "4xxx",
        3000..=3999 => "3xxx",
        _ => "other",
    }
}
