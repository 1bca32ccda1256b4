//! A lean RFC 6455 frame codec. Owned here rather than taken from a crate because the
//! connection must hold no buffer while idle (the per-connection memory budget), must
//! refuse an oversize frame from its header alone (close 1009 before reading the
//! payload), and writes pre-encoded JSON shared by every subscriber.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    STANDARD.encode(h.finalize())
}

/// A complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message, already checked to be UTF-8.
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>),
}

/// Why the read side must close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// A frame or reassembled message over the size limit (close 1009).
    TooBig,
    /// A text message that is not UTF-8 (close 1007).
    InvalidUtf8,
    /// Anything else that breaks RFC 6455 (close 1002).
    Protocol(&'static str),
}

/// Incremental frame reader. Holds bytes only while a frame or a fragmented message
/// is incomplete; otherwise its buffers are empty and unallocated.
#[derive(Default)]
pub struct Reader {
    partial: Vec<u8>,
    fragments: Option<(u8, Vec<u8>)>,
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    len: usize,
}

fn parse_header(buf: &[u8], max: usize) -> Result<Option<Header>, CodecError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(CodecError::Protocol("reserved bits set"));
    }
    if b1 & 0x80 == 0 {
        return Err(CodecError::Protocol("client frames must be masked"));
    }
    let opcode = b0 & 0x0F;
    let fin = b0 & 0x80 != 0;
    let (len, mut pos) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode >= 0x8 && (!fin || len > 125) {
        return Err(CodecError::Protocol("invalid control frame"));
    }
    if len > max as u64 {
        return Err(CodecError::TooBig);
    }
    if buf.len() < pos + 4 {
        return Ok(None);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&buf[pos..pos + 4]);
    pos += 4;
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        header_len: pos,
        len: len as usize,
    }))
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

impl Reader {
    /// Feeds bytes read from the socket; complete messages are appended to `out`.
    pub fn feed(
        &mut self,
        data: &[u8],
        max: usize,
        out: &mut Vec<Incoming>,
    ) -> Result<(), CodecError> {
        if self.partial.is_empty() {
            let used = self.parse(data, max, out)?;
            if used < data.len() {
                self.partial.extend_from_slice(&data[used..]);
            }
        } else {
            self.partial.extend_from_slice(data);
            let mut buf = std::mem::take(&mut self.partial);
            let used = self.parse(&buf, max, out)?;
            if used == buf.len() {
                // Everything consumed: the buffer is released, idle connections hold none.
            } else {
                buf.drain(..used);
                self.partial = buf;
            }
        }
        Ok(())
    }

    fn parse(
        &mut self,
        mut buf: &[u8],
        max: usize,
        out: &mut Vec<Incoming>,
    ) -> Result<usize, CodecError> {
        let mut used = 0;
        while let Some(h) = parse_header(buf, max)? {
            let total = h.header_len + h.len;
            if buf.len() < total {
                break;
            }
            let mut payload = buf[h.header_len..total].to_vec();
            unmask(&mut payload, h.mask);
            self.frame(h.fin, h.opcode, payload, max, out)?;
            buf = &buf[total..];
            used += total;
        }
        Ok(used)
    }

    fn frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: Vec<u8>,
        max: usize,
        out: &mut Vec<Incoming>,
    ) -> Result<(), CodecError> {
        match opcode {
            OP_PING => out.push(Incoming::Ping(payload)),
            OP_PONG => out.push(Incoming::Pong),
            OP_CLOSE => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                out.push(Incoming::Close(code));
            }
            OP_TEXT | OP_BINARY => {
                if self.fragments.is_some() {
                    return Err(CodecError::Protocol("new message inside a fragmented one"));
                }
                if fin {
                    out.push(message(opcode, payload)?);
                } else {
                    self.fragments = Some((opcode, payload));
                }
            }
            OP_CONT => {
                let Some((op, mut acc)) = self.fragments.take() else {
                    return Err(CodecError::Protocol("continuation without a message"));
                };
                if acc.len() + payload.len() > max {
                    return Err(CodecError::TooBig);
                }
                acc.extend_from_slice(&payload);
                if fin {
                    out.push(message(op, acc)?);
                } else {
                    self.fragments = Some((op, acc));
                }
            }
            _ => return Err(CodecError::Protocol("unknown opcode")),
        }
        Ok(())
    }
}

fn message(opcode: u8, payload: Vec<u8>) -> Result<Incoming, CodecError> {
    if opcode == OP_BINARY {
        return Ok(Incoming::Binary);
    }
    if simdutf8::basic::from_utf8(&payload).is_err() {
        return Err(CodecError::InvalidUtf8);
    }
    String::from_utf8(payload)
        .map(Incoming::Text)
        .map_err(|_| CodecError::InvalidUtf8)
}

fn put_header(buf: &mut Vec<u8>, opcode: u8, len: usize) {
    buf.push(0x80 | opcode);
    if len < 126 {
        buf.push(len as u8);
    } else if len <= u16::MAX as usize {
        buf.push(126);
        buf.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        buf.push(127);
        buf.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends an unmasked text frame carrying `json`.
pub fn put_text(buf: &mut Vec<u8>, json: &[u8]) {
    put_header(buf, OP_TEXT, json.len());
    buf.extend_from_slice(json);
}

pub fn put_ping(buf: &mut Vec<u8>) {
    put_header(buf, OP_PING, 0);
}

pub fn put_pong(buf: &mut Vec<u8>, data: &[u8]) {
    put_header(buf, OP_PONG, data.len());
    buf.extend_from_slice(data);
}

pub fn put_close(buf: &mut Vec<u8>, code: u16, reason: &str) {
    // Control frames carry at most 125 bytes: 2 for the code, the rest for the reason.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    put_header(buf, OP_CLOSE, 2 + end);
    buf.extend_from_slice(&code.to_be_bytes());
    buf.extend_from_slice(&reason.as_bytes()[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut v = vec![if fin { 0x80 } else { 0 } | opcode];
        if payload.len() < 126 {
            v.push(0x80 | payload.len() as u8);
        } else {
            v.push(0x80 | 126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        v
    }

    #[test]
    fn byte_by_byte_and_fragments() {
        let mut wire = masked(OP_TEXT, false, b"hel");
        wire.extend(masked(OP_PING, true, b"p"));
        wire.extend(masked(OP_CONT, true, "lo \u{e9}".as_bytes()));
        let mut r = Reader::default();
        let mut out = Vec::new();
        for b in &wire {
            r.feed(std::slice::from_ref(b), 1000, &mut out)
                .expect("valid");
        }
        assert_eq!(
            out,
            vec![
                Incoming::Ping(b"p".to_vec()),
                Incoming::Text("hello \u{e9}".into())
            ]
        );
        assert!(r.partial.is_empty() && r.fragments.is_none());
    }

    #[test]
    fn limits_and_errors() {
        let mut out = Vec::new();
        let big = masked(OP_TEXT, true, &[b'a'; 200]);
        assert_eq!(
            Reader::default().feed(&big[..4], 100, &mut out),
            Err(CodecError::TooBig)
        );
        let bad = masked(OP_TEXT, true, &[0xff, 0xfe]);
        assert_eq!(
            Reader::default().feed(&bad, 100, &mut out),
            Err(CodecError::InvalidUtf8)
        );
        let mut unmasked = masked(OP_TEXT, true, b"x");
        unmasked[1] &= 0x7f;
        assert!(matches!(
            Reader::default().feed(&unmasked, 100, &mut out),
            Err(CodecError::Protocol(_))
        ));
    }

    #[test]
    fn rfc_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
