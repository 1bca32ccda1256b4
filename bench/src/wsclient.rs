//! A lean WebSocket client for load generation: raw TCP, one upgrade request, masked
//! (zero-key) text frames out, unmasked frames in, no per-message allocation.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub(crate) struct WsClient {
    pub(crate) stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

pub(crate) enum Frame<'a> {
    Text(&'a [u8]),
    Close(u16),
    Other,
}

impl WsClient {
    pub(crate) async fn connect(
        addr: SocketAddr,
        path: &str,
        source: Option<IpAddr>,
    ) -> io::Result<WsClient> {
        let socket = TcpSocket::new_v4()?;
        // Closed with a reset, not a FIN: the generator's closes leave no TIME_WAIT
        // behind, so a run does not slow the next one's connects (28k ephemeral ports).
        socket.set_zero_linger()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let mut stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut c = WsClient {
            stream,
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
        };
        loop {
            if let Some(pos) = c.buf[..c.end].windows(4).position(|w| w == b"\r\n\r\n") {
                if !c.buf.starts_with(b"HTTP/1.1 101") {
                    let head = String::from_utf8_lossy(&c.buf[..pos]).to_string();
                    return Err(io::Error::other(format!("upgrade refused: {head}")));
                }
                c.start = pos + 4;
                return Ok(c);
            }
            c.fill().await?;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 && self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.end += n;
        Ok(())
    }

    pub(crate) async fn send_text(&mut self, text: &str) -> io::Result<()> {
        let n = text.len();
        let mut f = Vec::with_capacity(n + 14);
        f.push(0x81);
        if n < 126 {
            f.push(0x80 | n as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        // A zero masking key: valid, and the payload goes out unchanged.
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(text.as_bytes());
        self.stream.write_all(&f).await
    }

    async fn send_pong(&mut self) -> io::Result<()> {
        self.stream.write_all(&[0x8A, 0x80, 0, 0, 0, 0]).await
    }

    /// The next frame; pings are answered here.
    pub(crate) async fn next(&mut self) -> io::Result<Frame<'_>> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if avail.len() >= 2 {
                let op = avail[0] & 0x0f;
                let (len, hdr) = match avail[1] & 0x7f {
                    126 if avail.len() >= 4 => {
                        (u16::from_be_bytes([avail[2], avail[3]]) as usize, 4)
                    }
                    127 if avail.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&avail[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && avail.len() >= hdr + len {
                    let s = self.start + hdr;
                    self.start = s + len;
                    match op {
                        0x9 => {
                            self.send_pong().await?;
                            continue;
                        }
                        0x1 => return Ok(Frame::Text(&self.buf[s..s + len])),
                        0x8 => {
                            let code = if len >= 2 {
                                u16::from_be_bytes([self.buf[s], self.buf[s + 1]])
                            } else {
                                1005
                            };
                            return Ok(Frame::Close(code));
                        }
                        _ => return Ok(Frame::Other),
                    }
                }
            }
            self.fill().await?;
        }
    }

    /// Reads until a text frame containing `needle` arrives.
    pub(crate) async fn wait_for(&mut self, needle: &[u8]) -> io::Result<()> {
        loop {
            match self.next().await? {
                Frame::Text(t) if t.windows(needle.len()).any(|w| w == needle) => return Ok(()),
                Frame::Close(code) => return Err(io::Error::other(format!("closed {code}"))),
                _ => {}
            }
        }
    }

    /// Drops the read buffer down to a small one for idle holding.
    pub(crate) fn shrink(&mut self) {
        if self.start == self.end {
            self.buf = vec![0; 4096];
            self.start = 0;
            self.end = 0;
        }
    }
}

/// The `"ts":<ns>` stamped into a benchmark payload, if present.
/// Pusher servers deliver the payload as a JSON string, so the key may be escaped.
pub(crate) fn find_ts(text: &[u8]) -> Option<u64> {
    let pos = match text.windows(5).position(|w| w == b"\"ts\":") {
        Some(p) => p + 5,
        None => text.windows(7).position(|w| w == b"\\\"ts\\\":")? + 7,
    };
    let mut v: u64 = 0;
    let mut any = false;
    for &b in &text[pos..] {
        if b.is_ascii_digit() {
            v = v * 10 + u64::from(b - b'0');
            any = true;
        } else {
            break;
        }
    }
    any.then_some(v)
}
