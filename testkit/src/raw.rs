//! A deliberately crude WebSocket client over a plain TCP socket, for what a proper
//! client refuses to send: invalid UTF-8, oversize frames, binary junk, and for a
//! reader that never reads (a stalled consumer with a tiny receive buffer).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A server frame as read from the wire.
#[derive(Debug)]
pub enum Frame {
    Text(String),
    Close(Option<u16>),
    Ping,
    Other(u8),
}

impl RawClient {
    /// Connects and upgrades `path`; `recv_buffer` shrinks SO_RCVBUF (stalled readers).
    pub async fn connect(addr: SocketAddr, path: &str, recv_buffer: Option<u32>) -> RawClient {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(n) = recv_buffer {
            socket.set_recv_buffer_size(n).expect("SO_RCVBUF");
        }
        let mut stream = socket.connect(addr).await.expect("connect");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(req.as_bytes())
            .await
            .expect("write upgrade");
        let mut c = RawClient {
            stream,
            buf: Vec::new(),
        };
        let head = c.read_until_headers().await;
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        c
    }

    async fn read_until_headers(&mut self) -> String {
        loop {
            if let Some(pos) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..pos]).to_string();
                self.buf.drain(..pos + 4);
                return head;
            }
            self.fill().await.expect("read upgrade response");
        }
    }

    async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(super::WAIT, self.stream.read(&mut chunk))
            .await
            .expect("raw read timed out")
            .ok()?;
        if n == 0 {
            return None;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Some(())
    }

    /// Sends one masked frame with any opcode and bytes.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut f = vec![0x80 | opcode];
        let mask = [7u8, 1, 9, 3];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        // The server may close before reading everything; that is what some tests expect.
        let _ = self.stream.write_all(&f).await;
    }

    pub async fn send_text(&mut self, s: &str) {
        self.send_frame(0x1, s.as_bytes()).await
    }

    /// The next frame, or `None` at EOF.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 2 {
                let op = self.buf[0] & 0x0f;
                let (len, start) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buf.len() >= start + len {
                    let payload: Vec<u8> = self.buf[start..start + len].to_vec();
                    self.buf.drain(..start + len);
                    return Some(match op {
                        0x1 => {
                            Frame::Text(String::from_utf8(payload).expect("server text is UTF-8"))
                        }
                        0x8 => Frame::Close(
                            (payload.len() >= 2)
                                .then(|| u16::from_be_bytes([payload[0], payload[1]])),
                        ),
                        0x9 => Frame::Ping,
                        o => Frame::Other(o),
                    });
                }
            }
            self.fill().await?;
        }
    }

    /// Reads frames until the close; returns its code and the texts seen before it.
    pub async fn until_close(&mut self) -> (Option<u16>, Vec<String>) {
        let mut texts = Vec::new();
        loop {
            match self.next_frame().await {
                Some(Frame::Close(code)) => return (code, texts),
                Some(Frame::Text(t)) => texts.push(t),
                Some(_) => {}
                None => return (None, texts),
            }
        }
    }

    /// True when the server ended the TCP connection with no close frame at all.
    pub async fn dropped_without_close(&mut self, within: Duration) -> bool {
        let r = tokio::time::timeout(within, async {
            loop {
                match self.next_frame().await {
                    None => return true,
                    Some(Frame::Close(_)) => return false,
                    Some(_) => {}
                }
            }
        })
        .await;
        r.unwrap_or(false)
    }
}
