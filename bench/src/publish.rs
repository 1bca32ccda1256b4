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

/// Sockudo's REST API (Pusher's): every request signed, and every response sent with
/// `Connection: close`, so each publication is its own connection; `depth` of them
/// run at once.
pub(crate) struct PusherPublisher {
    addr: std::net::SocketAddr,
    app_id: String,
    key: String,
    secret: String,
    running: tokio::task::JoinSet<io::Result<u16>>,
}

impl PusherPublisher {
    pub(crate) fn new(addr: SocketAddr, app_id: &str, key: &str, secret: &str) -> Self {
        PusherPublisher {
            addr,
            app_id: app_id.to_owned(),
            key: key.to_owned(),
            secret: secret.to_owned(),
            running: tokio::task::JoinSet::new(),
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.running.len()
    }

    /// The signed request line's path and query for `POST /apps/<id>/events`.
    fn signed_path(&self, body: &str) -> String {
        use hmac::Mac;
        use md5::Digest;
        let path = format!("/apps/{}/events", self.app_id);
        let md5 = hex(&md5::Md5::digest(body.as_bytes()));
        let ts = switchyard::auth::unix_now();
        // Parameters in sorted order, as the signature requires.
        let query = format!(
            "auth_key={}&auth_timestamp={ts}&auth_version=1.0&body_md5={md5}",
            self.key
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.secret.as_bytes())
            .expect("any key length");
        mac.update(format!("POST\n{path}\n{query}").as_bytes());
        let sig = hex(&mac.finalize().into_bytes());
        format!("{path}?{query}&auth_signature={sig}")
    }

    pub(crate) fn send(&mut self, body: String) {
        let path = self.signed_path(&body);
        let addr = self.addr;
        self.running.spawn(async move {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(req.as_bytes()).await?;
            let mut resp = Vec::new();
            stream.read_to_end(&mut resp).await?;
            let status = std::str::from_utf8(resp.get(9..12).unwrap_or_default())
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Ok(status)
        });
    }

    pub(crate) async fn recv(&mut self) -> io::Result<u16> {
        match self.running.join_next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(io::Error::other(e)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What publishes for a run: pipelined HTTP (switchyard, the ceiling, Socket.IO) or
/// Sockudo's signed one-connection-per-request API.
pub(crate) enum Publisher {
    Http(HttpPublisher),
    Pusher(PusherPublisher),
}

impl Publisher {
    pub(crate) fn in_flight(&self) -> usize {
        match self {
            Publisher::Http(p) => p.in_flight,
            Publisher::Pusher(p) => p.in_flight(),
        }
    }

    pub(crate) async fn send(&mut self, path: &str, body: String) -> io::Result<()> {
        match self {
            Publisher::Http(p) => p.send(path, &body).await,
            Publisher::Pusher(p) => {
                p.send(body);
                Ok(())
            }
        }
    }

    pub(crate) async fn recv(&mut self) -> io::Result<u16> {
        match self {
            Publisher::Http(p) => p.recv().await,
            Publisher::Pusher(p) => p.recv().await,
        }
    }
}
