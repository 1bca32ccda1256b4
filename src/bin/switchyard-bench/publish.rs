//! Publishing for the benchmark: pipelined HTTP/1.1 requests on raw TCP (keep-alive,
//! no client library in the way), to `/api/publish` or the ceiling's `/publish`.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) struct HttpPublisher {
    stream: TcpStream,
    host: String,
    key: String,
    buf: Vec<u8>,
    pub(crate) in_flight: usize,
}

impl HttpPublisher {
    pub(crate) async fn connect(addr: SocketAddr, key: &str) -> io::Result<HttpPublisher> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpPublisher {
            stream,
            host: addr.to_string(),
            key: key.to_owned(),
            buf: Vec::with_capacity(8192),
            in_flight: 0,
        })
    }

    pub(crate) async fn send(&mut self, path: &str, body: &str) -> io::Result<()> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nX-API-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.key,
            body.len()
        );
        self.stream.write_all(req.as_bytes()).await?;
        self.in_flight += 1;
        Ok(())
    }

    /// A GET on its own (not pipelined); returns the status.
    pub(crate) async fn get_status(&mut self, path: &str) -> io::Result<u16> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.stream.write_all(req.as_bytes()).await?;
        self.in_flight += 1;
        self.recv().await
    }

    /// Reads one response; returns its status code.
    pub(crate) async fn recv(&mut self) -> io::Result<u16> {
        loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..p]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= p + 4 + len {
                    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                    self.buf.drain(..p + 4 + len);
                    self.in_flight -= 1;
                    return Ok(status);
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
