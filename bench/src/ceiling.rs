//! The ceiling: the least a fan-out server on the same socket stack (tokio) can do.
//! It accepts WebSocket upgrades with no protocol at all, and `POST /publish` writes
//! the body as one pre-encoded frame to every connection's bounded queue.

use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Subscribers by channel number (`/ws?ch=<n>`, `POST /publish?ch=<n>`).
type Subscribers = Arc<Mutex<std::collections::HashMap<u32, Vec<mpsc::Sender<Bytes>>>>>;

pub(crate) async fn serve(listener: TcpListener) {
    let subs: Subscribers = Arc::default();
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(handle(stream, subs.clone()));
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn channel_of(head: &str) -> u32 {
    head.split_whitespace()
        .nth(1)
        .and_then(|path| path.split_once("ch="))
        .and_then(|(_, v)| v.split('&').next()?.parse().ok())
        .unwrap_or(0)
}

fn frame(payload: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(payload.len() + 4);
    f.push(0x81);
    if payload.len() < 126 {
        f.push(payload.len() as u8);
    } else {
        f.push(126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(payload);
    Bytes::from(f)
}

async fn handle(mut stream: TcpStream, subs: Subscribers) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        // One request head (and for POST its body).
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = vec![0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        if head.starts_with("GET ") {
            let Some(key) = header(&head, "sec-websocket-key") else {
                return;
            };
            let mut h = Sha1::new();
            h.update(key.as_bytes());
            h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
            let accept = base64::engine::general_purpose::STANDARD.encode(h.finalize());
            let resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
            if stream.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
            let ch = channel_of(&head);
            drop(buf);
            return websocket(stream, subs, ch).await;
        }
        let len: usize = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = vec![0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = frame(&buf[head_end..head_end + len]);
        buf.drain(..head_end + len);
        let ch = channel_of(&head);
        let targets: Vec<_> = subs
            .lock()
            .ok()
            .and_then(|s| s.get(&ch).cloned())
            .unwrap_or_default();
        for t in &targets {
            let _ = t.try_send(body.clone());
        }
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn websocket(stream: TcpStream, subs: Subscribers, ch: u32) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
    if let Ok(mut s) = subs.lock() {
        s.entry(ch).or_default().push(tx);
    }
    let (mut r, mut w) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut sink = vec![0u8; 512];
        while let Ok(n) = r.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
    // Whatever is queued goes out in one write: the least any fan-out server does.
    let mut frames = Vec::with_capacity(64);
    let mut out = Vec::new();
    while rx.recv_many(&mut frames, 256).await > 0 {
        out.clear();
        for f in frames.drain(..) {
            out.extend_from_slice(&f);
        }
        if w.write_all(&out).await.is_err() {
            break;
        }
    }
    reader.abort();
}
