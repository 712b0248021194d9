//! The little HTTP the tool needs: where to connect, how its requests look, and how to
//! read a response off a raw socket (head, then a body framed by length or chunks) so the
//! connection can carry the next request.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::Target;

/// `http://host:port/prefix` (or `https://`), split into what a socket and a request line need.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `https://`: connections begin with a TLS handshake (`fanout` only).
    pub tls: bool,
    /// `host:port`, for connecting and for the `Host` header.
    pub authority: String,
    /// The path prefix, without a trailing slash (often empty).
    pub prefix: String,
}

impl Endpoint {
    /// An `http://` URL: the commands that speak plain HTTP only.
    pub fn parse(url: &str) -> Result<Self, String> {
        match Self::parse_any(url)? {
            Self { tls: true, .. } => Err(format!("{url:?}: only http:// URLs are supported")),
            endpoint => Ok(endpoint),
        }
    }

    /// An `http://` or `https://` URL.
    pub fn parse_any(url: &str) -> Result<Self, String> {
        let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(format!("{url:?}: only http:// and https:// URLs are supported")),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = if tls { 443 } else { 80 };
        let authority =
            if authority.contains(':') { authority.to_owned() } else { format!("{authority}:{port}") };
        Ok(Self { tls, authority, prefix: format!("/{path}").trim_end_matches('/').to_owned() })
    }

    /// The host, without the port: the name a TLS certificate must carry.
    pub fn host(&self) -> &str {
        self.authority.rsplit_once(':').map_or(&self.authority, |(host, _)| host)
    }

    /// `scheme://authority`, the start of an absolute URI.
    pub fn origin(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.authority)
    }

    /// The server's socket address.
    pub async fn resolve(&self) -> Result<std::net::SocketAddr, String> {
        tokio::net::lookup_host(&self.authority)
            .await
            .map_err(|e| format!("{}: {e}", self.authority))?
            .next()
            .ok_or_else(|| format!("{}: no address", self.authority))
    }

    /// The request that publishes `text` to `room`.
    pub fn publish(&self, target: Target, room: &str, text: &str) -> Request<Full<Bytes>> {
        let (path, content_type, body) = match target {
            Target::Ssechat => (
                format!("{}/send", self.prefix),
                "application/json",
                serde_json::json!({ "room": room, "author": "load", "text": text }).to_string(),
            ),
            Target::Nchan => (format!("{}/pub?room={room}", self.prefix), "text/plain", text.to_owned()),
        };
        self.post(path, content_type, body)
    }

    /// The request that says `author` is typing in `room` (ssechat only).
    pub fn typing(&self, room: &str, author: &str) -> Request<Full<Bytes>> {
        let body = serde_json::json!({ "room": room, "author": author }).to_string();
        self.post(format!("{}/typing", self.prefix), "application/json", body)
    }

    fn post(&self, path: String, content_type: &str, body: String) -> Request<Full<Bytes>> {
        Request::post(path)
            .header("host", &self.authority)
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request")
    }

    /// The path of a room's stream.
    pub fn stream_path(&self, target: Target, room: &str) -> String {
        match target {
            Target::Ssechat => format!("{}/events?room={room}", self.prefix),
            Target::Nchan => format!("{}/sub?room={room}", self.prefix),
        }
    }
}

/// What a stream connection sends, in order: with `--warm`, the room page first, as a
/// browser does before it opens its EventSource on the same keep-alive connection.
#[derive(Debug, Clone)]
pub struct StreamRequests {
    pub page: Option<String>,
    pub stream: String,
}

/// The `Accept` header a browser sends when it navigates to a page.
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

impl Endpoint {
    /// The requests that open a stream on `room`, resuming after `last_event_id` if given.
    /// `warm` needs the ssechat target: nchan serves no room page.
    pub fn stream_requests(
        &self,
        target: Target,
        room: &str,
        warm: bool,
        last_event_id: Option<u64>,
    ) -> StreamRequests {
        let resume = last_event_id.map(|id| format!("last-event-id: {id}\r\n")).unwrap_or_default();
        let stream = format!(
            "GET {} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n{resume}\r\n",
            self.stream_path(target, room),
            self.authority
        );
        let page = warm.then(|| {
            format!(
                "GET {}/rooms/{room} HTTP/1.1\r\nhost: {}\r\naccept: {BROWSER_ACCEPT}\r\naccept-language: en\r\n\r\n",
                self.prefix, self.authority
            )
        });
        StreamRequests { page, stream }
    }
}

/// `--warm` loads the room page first, which only ssechat serves.
pub fn check_warm(target: Target, warm: bool) -> Result<(), String> {
    match (target, warm) {
        (Target::Nchan, true) => {
            Err("--warm needs --target ssechat: nchan serves no room page to load before the stream"
                .to_owned())
        }
        _ => Ok(()),
    }
}

/// A response's status, and how its body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub body: Framing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(usize),
    Chunked,
    /// Neither length nor chunked: the body runs until the server closes (HTTP/1.0 style).
    UntilClose,
}

/// A response head larger than this is refused: no server of ours sends one.
const MAX_HEAD: usize = 16 * 1024;
/// A page body larger than this is refused, so a wrong framing cannot read forever.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How long one read may wait before the response counts as stuck.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Parses a response head at the start of `buf`: `None` while incomplete, else the head and
/// its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf).map_err(|e| format!("bad response head: {e}"))? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    let status = response.code.expect("a complete head has a status");
    Ok(Some((ResponseHead { status, body: framing(response.headers)? }, len)))
}

fn framing(headers: &[httparse::Header]) -> Result<Framing, String> {
    let value = |name: &str| headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    if let Some(encoding) = value("transfer-encoding") {
        let chunked = encoding.to_ascii_lowercase().ends_with(b"chunked");
        return if chunked { Ok(Framing::Chunked) } else { Err("unsupported transfer-encoding".to_owned()) };
    }
    match value("content-length") {
        Some(length) => std::str::from_utf8(length)
            .ok()
            .and_then(|l| l.trim().parse().ok())
            .map(Framing::Length)
            .ok_or_else(|| format!("bad content-length {:?}", String::from_utf8_lossy(length))),
        None => Ok(Framing::UntilClose),
    }
}

/// The length of the complete body at the start of `buf`, or `None` while more is to come.
/// `UntilClose` bodies are never complete here: the caller reads them to the end.
pub fn body_len(framing: Framing, buf: &[u8]) -> Result<Option<usize>, String> {
    match framing {
        Framing::Length(n) => Ok((buf.len() >= n).then_some(n)),
        Framing::Chunked => chunked_len(buf),
        Framing::UntilClose => Ok(None),
    }
}

/// Walks chunk by chunk (`size CRLF data CRLF`) to the last chunk and its trailer section.
fn chunked_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut at = 0;
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&buf[at..]) {
            Ok(httparse::Status::Complete(parsed)) => parsed,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("bad chunk size in the response body".to_owned()),
        };
        at += size_len;
        if size == 0 {
            return Ok(trailers_len(&buf[at..]).map(|len| at + len));
        }
        let end = usize::try_from(size).ok().and_then(|s| at.checked_add(s)).ok_or("chunk too large")?;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".to_owned());
        }
        at = end + 2;
    }
}

/// The trailer section after the last chunk: either an empty line, or header lines ending
/// with one.
fn trailers_len(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads a response head from `io`, starting with the bytes already in `buf`; what follows
/// the head stays in `buf`.
pub async fn read_head(io: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> Result<ResponseHead, String> {
    loop {
        if let Some((head, len)) = parse_head(buf)? {
            buf.drain(..len);
            return Ok(head);
        }
        if buf.len() > MAX_HEAD {
            return Err("response head too large".to_owned());
        }
        fill(io, buf, "the response head").await?;
    }
}

/// Reads a whole response (head and body) from `io`, starting with the bytes already in
/// `buf`. Whatever follows the body stays in `buf`, for the next response.
pub async fn read_response(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<ResponseHead, String> {
    let head = read_head(io, buf).await?;
    if head.body == Framing::UntilClose {
        return Err(format!("{} response has no length: the connection cannot be kept", head.status));
    }
    loop {
        if let Some(len) = body_len(head.body, buf)? {
            buf.drain(..len);
            return Ok(head);
        }
        if buf.len() > MAX_BODY {
            return Err("response body too large".to_owned());
        }
        fill(io, buf, "the response body").await?;
    }
}

/// One read into `buf`; the end of the stream or a stall is an error naming `what` was due.
/// Reads straight into `buf`, so no buffer lives in the task while it waits.
async fn fill(io: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>, what: &str) -> Result<(), String> {
    buf.reserve(4096);
    let n = tokio::time::timeout(READ_TIMEOUT, io.read_buf(buf))
        .await
        .map_err(|_| format!("no {what} in {} s", READ_TIMEOUT.as_secs()))?
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err(format!("closed before {what}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncRead;

    const NEXT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n: ok\n\n";
    const LENGTH: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 11\r\n\r\n<p>hi</p>\r\n";
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\n<p>hi\r\n6;ext=1\r\n</p>\r\n\r\n0\r\n\r\n";
    const CHUNKED_TRAILERS: &[u8] =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-check: 1\r\n\r\n";

    /// A reader that hands out `pieces` one per read, as a socket might.
    fn pieces(pieces: Vec<Vec<u8>>) -> impl AsyncRead + Unpin {
        let start: Box<dyn AsyncRead + Unpin> = Box::new(tokio::io::empty());
        pieces.into_iter().fold(start, |reader, piece| Box::new(reader.chain(std::io::Cursor::new(piece))))
    }

    /// `response` then `NEXT`, as one byte stream.
    fn then_next(response: &[u8]) -> Vec<u8> {
        [response, NEXT].concat()
    }

    /// Reads one response off `reader`, then checks the next one follows intact.
    async fn read_both(mut reader: impl AsyncRead + Unpin) -> ResponseHead {
        let mut buf = Vec::new();
        let head = read_response(&mut reader, &mut buf).await.expect("the first response");
        let next = read_head(&mut reader, &mut buf).await.expect("the next head");
        assert_eq!(next, ResponseHead { status: 200, body: Framing::UntilClose });
        reader.read_to_end(&mut buf).await.expect("the rest");
        assert_eq!(buf, b": ok\n\n", "the bytes after the next head are kept, in order");
        head
    }

    #[tokio::test]
    async fn a_content_length_body_is_read_and_what_follows_is_kept() {
        let head = read_both(pieces(vec![then_next(LENGTH)])).await;
        assert_eq!(head, ResponseHead { status: 200, body: Framing::Length(11) });
    }

    #[tokio::test]
    async fn a_chunked_body_with_extensions_is_read_and_what_follows_is_kept() {
        let head = read_both(pieces(vec![then_next(CHUNKED)])).await;
        assert_eq!(head, ResponseHead { status: 200, body: Framing::Chunked });
    }

    #[tokio::test]
    async fn a_chunked_body_with_trailers_is_read_to_its_end() {
        read_both(pieces(vec![then_next(CHUNKED_TRAILERS)])).await;
    }

    #[tokio::test]
    async fn responses_split_at_every_byte_read_the_same() {
        for response in [LENGTH, CHUNKED, CHUNKED_TRAILERS] {
            let bytes = then_next(response);
            for at in 0..=bytes.len() {
                read_both(pieces(vec![bytes[..at].to_vec(), bytes[at..].to_vec()])).await;
            }
            read_both(pieces(bytes.iter().map(|&b| vec![b]).collect())).await;
        }
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_naming_the_body() {
        for response in [LENGTH, CHUNKED] {
            let mut buf = Vec::new();
            let cut = pieces(vec![response[..response.len() - 3].to_vec()]);
            let error = read_response(&mut { cut }, &mut buf).await.unwrap_err();
            assert_eq!(error, "closed before the response body");
        }
    }

    #[tokio::test]
    async fn a_response_without_length_cannot_be_kept_alive() {
        let mut buf = Vec::new();
        let error = read_response(&mut pieces(vec![NEXT.to_vec()]), &mut buf).await.unwrap_err();
        assert!(error.contains("no length"), "{error}");
    }

    #[test]
    fn bad_framing_is_refused_with_a_reason() {
        let bad_length = b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n";
        assert_eq!(parse_head(bad_length).unwrap_err(), "bad content-length \"ten\"");
        let bad_chunk = b"zz\r\nabc\r\n";
        assert!(body_len(Framing::Chunked, bad_chunk).unwrap_err().contains("chunk size"));
        let no_crlf = b"3\r\nabcXY0\r\n\r\n";
        assert!(body_len(Framing::Chunked, no_crlf).unwrap_err().contains("CRLF"));
        assert!(parse_head(b"HTTP/1.1 2x0 OK\r\n\r\n").unwrap_err().contains("bad response head"));
    }

    #[test]
    fn warm_requests_load_the_room_page_first_with_a_browser_accept() {
        let endpoint = Endpoint::parse("http://127.0.0.1:3000/chat").unwrap();
        let warm = endpoint.stream_requests(Target::Ssechat, "lobby", true, None);
        let page = warm.page.expect("a page request");
        assert!(page.starts_with("GET /chat/rooms/lobby HTTP/1.1\r\n"), "{page}");
        assert!(page.contains("\r\naccept: text/html,"), "{page}");
        let fresh = endpoint.stream_requests(Target::Ssechat, "lobby", false, Some(7));
        assert!(fresh.page.is_none());
        assert_eq!(
            fresh.stream,
            "GET /chat/events?room=lobby HTTP/1.1\r\nhost: 127.0.0.1:3000\r\naccept: text/event-stream\r\nlast-event-id: 7\r\n\r\n"
        );
        assert_eq!(warm.stream, endpoint.stream_requests(Target::Ssechat, "lobby", false, None).stream);
    }

    #[tokio::test]
    async fn a_typing_signal_is_a_json_post_to_typing() {
        use http_body_util::BodyExt;
        let endpoint = Endpoint::parse("http://127.0.0.1:3000/chat").unwrap();
        let request = endpoint.typing("lobby", "flood-7");
        assert_eq!((request.method().as_str(), request.uri().path()), ("POST", "/chat/typing"));
        assert_eq!(request.headers()["content-type"], "application/json");
        assert_eq!(request.headers()["host"], "127.0.0.1:3000");
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let fields: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(fields, serde_json::json!({ "room": "lobby", "author": "flood-7" }));
    }

    #[test]
    fn warm_is_refused_for_nchan() {
        let error = check_warm(Target::Nchan, true).unwrap_err();
        assert!(error.contains("--warm needs --target ssechat"), "{error}");
        assert!(check_warm(Target::Nchan, false).is_ok());
        assert!(check_warm(Target::Ssechat, true).is_ok());
    }
}
