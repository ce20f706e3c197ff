//! A minimal HTTP/1.1 client over `tokio::net::TcpStream` for `gpt bench serve`: one request per
//! connection (`Connection: close`), a response read as it arrives, its body framed by
//! `Transfer-Encoding: chunked`, `Content-Length` or the end of the connection, and a
//! Server-Sent-Events parser for streamed completions.
//!
//! Why not a client crate: the load generator talks to servers on the loopback only, needs the
//! arrival time of every SSE event and nothing of TLS, redirects, proxies or pooling; the three
//! framings and the event parser are small, incremental and tested here without a network. One
//! connection per request costs a loopback connect (tens of microseconds), the same for every
//! server measured.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Response heads larger than this are refused (no server here sends one).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What went wrong talking to a server, in words (the load generator counts it as an error).
pub type HttpError = String;

/// How the body of a response ends.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked(ChunkedDecoder),
    /// `Content-Length: n`, bytes still to come.
    Length(u64),
    /// Neither: the body ends when the server closes the connection.
    UntilClose,
}

/// A response whose body is read as it arrives.
pub struct Response {
    /// The status code.
    pub status: u16,
    stream: TcpStream,
    framing: Framing,
    /// Body bytes read with the head, not yet returned.
    pending: Vec<u8>,
    finished: bool,
}

impl Response {
    /// The next piece of the body (`None` once it has ended cleanly); an error when the connection
    /// ends before the framing says the body is complete.
    pub async fn next_bytes(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let raw = if self.pending.is_empty() {
                let mut buf = vec![0u8; 16 * 1024];
                let n = self
                    .stream
                    .read(&mut buf)
                    .await
                    .map_err(|e| format!("reading the body: {e}"))?;
                buf.truncate(n);
                buf
            } else {
                std::mem::take(&mut self.pending)
            };
            let at_eof = raw.is_empty();
            let mut out = Vec::new();
            match &mut self.framing {
                Framing::Chunked(d) => {
                    if at_eof {
                        return Err("the connection closed inside a chunked body".into());
                    }
                    d.feed(&raw, &mut out)?;
                    self.finished = d.is_done();
                }
                Framing::Length(left) => {
                    if at_eof {
                        return Err(format!(
                            "the connection closed {left} bytes before the body's end"
                        ));
                    }
                    let take = raw.len().min(*left as usize);
                    out.extend_from_slice(&raw[..take]);
                    *left -= take as u64;
                    self.finished = *left == 0;
                }
                Framing::UntilClose => {
                    if at_eof {
                        self.finished = true;
                        return Ok(None);
                    }
                    out = raw;
                }
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
    }

    /// The whole (rest of the) body.
    pub async fn body(&mut self) -> Result<Vec<u8>, HttpError> {
        let mut all = Vec::new();
        while let Some(b) = self.next_bytes().await? {
            all.extend(b);
        }
        Ok(all)
    }
}

/// Sends `method path` with an optional JSON body to `addr` and reads the response head.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    // Tokens are small writes; Nagle's algorithm would hold the request back for nothing.
    let _ = stream.set_nodelay(true);
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n");
    if let Some(b) = json_body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(json_body.unwrap_or_default());
    stream
        .write_all(&bytes)
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(format!("the response head is over {MAX_HEAD_BYTES} bytes"));
        }
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the response head: {e}"))?;
        if n == 0 {
            return Err("the connection closed before a response head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let (status, framing) = parse_head(&buf[..head_end])?;
    Ok(Response {
        status,
        stream,
        // A body of length 0 has already ended.
        finished: framing == Framing::Length(0),
        framing,
        pending: buf[head_end..].to_vec(),
    })
}

/// `GET path` and the whole body, for probes such as `/health`.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), HttpError> {
    let mut r = request(addr, "GET", path, None).await?;
    let body = r.body().await?;
    Ok((r.status, body))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The status code and body framing of a response head (status line and headers, through the
/// blank line).
fn parse_head(head: &[u8]) -> Result<(u16, Framing), HttpError> {
    let text = std::str::from_utf8(head).map_err(|_| "the response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let status = match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/1.") => code,
        _ => return Err(format!("not an HTTP/1.x status line: {status_line:?}")),
    };
    let mut framing = Framing::UntilClose;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            framing = Framing::Chunked(ChunkedDecoder::default());
        } else if name == "content-length" && !matches!(framing, Framing::Chunked(_)) {
            let n = value
                .parse::<u64>()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            framing = Framing::Length(n);
        }
    }
    Ok((status, framing))
}

/// Where a [`ChunkedDecoder`] is in the body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line (hex size, optional `;extensions`, CRLF).
    #[default]
    Size,
    /// Inside a chunk's data, bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last (zero-size) chunk: trailer lines until a blank line.
    Trailer,
    /// The body has ended.
    Done,
}

/// An incremental decoder of `Transfer-Encoding: chunked` (RFC 9112 §7.1): bytes in as they
/// arrive, body bytes out, whatever the split.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// An incomplete line (size or trailer) carried to the next call.
    line: Vec<u8>,
}

impl ChunkedDecoder {
    /// Whether the terminating chunk and trailer have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, appending body bytes to `out`. Bytes after the end are ignored.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), HttpError> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Done => return Ok(()),
                ChunkState::Data(left) => {
                    let take = input.len().min(left as usize);
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.state = if left == take as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take as u64)
                    };
                }
                ChunkState::DataEnd => {
                    // Exactly CRLF (or a bare LF) ends a chunk's data.
                    match (self.line.as_slice(), input[0]) {
                        (b"" | b"\r", b'\n') => {
                            self.line.clear();
                            self.state = ChunkState::Size;
                        }
                        (b"", b'\r') => self.line.push(b'\r'),
                        _ => return Err("chunk data is longer than its size".into()),
                    }
                    input = &input[1..];
                }
                ChunkState::Size | ChunkState::Trailer => {
                    let Some(nl) = input.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(input);
                        if self.line.len() > 4096 {
                            return Err("a chunk-size line is over 4096 bytes".into());
                        }
                        return Ok(());
                    };
                    self.line.extend_from_slice(&input[..nl]);
                    input = &input[nl + 1..];
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        ChunkState::Trailer if line.is_empty() => ChunkState::Done,
                        ChunkState::Trailer => ChunkState::Trailer,
                        _ => {
                            let text = std::str::from_utf8(line).unwrap_or("");
                            let hex = text.split(';').next().unwrap_or("").trim();
                            let size = u64::from_str_radix(hex, 16)
                                .map_err(|_| format!("bad chunk-size line {text:?}"))?;
                            if size == 0 {
                                ChunkState::Trailer
                            } else {
                                ChunkState::Data(size)
                            }
                        }
                    };
                }
            }
        }
        Ok(())
    }
}

/// An incremental Server-Sent-Events parser: body bytes in as they arrive, the `data` of each
/// complete event out (multi-line data joined with `\n`; comments and other fields dropped).
#[derive(Clone, Debug, Default)]
pub struct SseParser {
    /// Bytes of an incomplete line.
    line: Vec<u8>,
    /// The data lines of the event being read.
    data: Vec<String>,
    /// Whether the event being read has a `data` field.
    has_data: bool,
}

impl SseParser {
    /// Feeds `bytes`; returns the data of the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let raw = std::mem::take(&mut self.line);
            let raw = raw.strip_suffix(b"\r").unwrap_or(&raw);
            let line = String::from_utf8_lossy(raw);
            if line.is_empty() {
                if self.has_data {
                    events.push(self.data.join("\n"));
                }
                self.data.clear();
                self.has_data = false;
            } else if let Some(v) = line.strip_prefix("data") {
                match v.strip_prefix(':') {
                    Some(v) => {
                        self.data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                        self.has_data = true;
                    }
                    None if v.is_empty() => {
                        self.data.push(String::new());
                        self.has_data = true;
                    }
                    // A field named e.g. `database`: not ours.
                    None => {}
                }
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(body: &[u8], piece: usize) -> (Vec<u8>, bool) {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        for p in body.chunks(piece) {
            d.feed(p, &mut out).unwrap();
        }
        (out, d.is_done())
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_split() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nleftover";
        for piece in 1..body.len() {
            let (out, done) = decode_in_pieces(body, piece);
            assert_eq!(out, b"hello, world", "piece {piece}");
            assert!(done, "piece {piece}");
        }
        // Not yet at the end: no terminating chunk.
        let (out, done) = decode_in_pieces(b"3\r\nabc\r\n", 2);
        assert_eq!((out.as_slice(), done), (&b"abc"[..], false));
        let mut d = ChunkedDecoder::default();
        assert!(d.feed(b"zz\r\n", &mut Vec::new()).is_err());
        let mut d = ChunkedDecoder::default();
        assert!(
            d.feed(b"1\r\nab", &mut Vec::new()).is_err(),
            "data longer than its size"
        );
    }

    #[test]
    fn response_heads_give_status_and_framing() {
        let h = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (s, f) = parse_head(h).unwrap();
        assert_eq!(s, 200);
        assert!(matches!(f, Framing::Chunked(_)));
        let (s, f) =
            parse_head(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!((s, f), (429, Framing::Length(12)));
        assert_eq!(
            parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().1,
            Framing::UntilClose
        );
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn sse_events_split_across_reads() {
        let stream = "data: {\"a\":1}\n\n: a comment\n\ndata: {\"b\":\ndata: 2}\r\n\r\nevent: x\ndata:[DONE]\n\n";
        for piece in 1..stream.len() {
            let mut p = SseParser::default();
            let mut got = Vec::new();
            for c in stream.as_bytes().chunks(piece) {
                got.extend(p.feed(c));
            }
            assert_eq!(got, ["{\"a\":1}", "{\"b\":\n2}", "[DONE]"], "piece {piece}");
        }
        // An event is only complete at its blank line.
        let mut p = SseParser::default();
        assert!(p.feed(b"data: x\n").is_empty());
        assert_eq!(p.feed(b"\n"), ["x"]);
    }
}
