//! Request heads as the connection loop reads them: where one ends, how long its body is,
//! and whether the connection can come back after it.

/// A request head at the front of the buffer, as far as this loop needs to know it.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Its length in bytes.
    pub len: usize,
    /// The body that follows it, by `Content-Length`.
    pub body: u64,
    /// HTTP/1.1 with a known body length: after its response the connection can come
    /// back here for the next request.
    pub one_at_a_time: bool,
    /// The client asked to close after this request.
    pub close: bool,
}

impl RequestHead {
    /// The head at the front of `buffered`, once it is all there.
    pub fn parse(buffered: &[u8]) -> Option<RequestHead> {
        let mut raw = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut raw);
        let len = match request.parse(buffered) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return None,
            // Malformed, or more headers than fit: hyper gives the answer.
            Err(_) => return Some(RequestHead::unusual(buffered)),
        };
        let mut body = 0;
        let mut known_length = true;
        let mut close = false;
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                match std::str::from_utf8(header.value).ok().and_then(|v| v.trim().parse().ok()) {
                    Some(n) if body == 0 || body == n => body = n,
                    _ => known_length = false,
                }
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                known_length = false;
            } else if header.name.eq_ignore_ascii_case("connection") {
                close |=
                    header.value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            }
        }
        let one_at_a_time = request.version == Some(1) && known_length;
        Some(RequestHead { len, body, one_at_a_time, close })
    }

    fn unusual(buffered: &[u8]) -> RequestHead {
        RequestHead { len: buffered.len(), body: 0, one_at_a_time: false, close: true }
    }
}

#[cfg(test)]
mod tests {
    use super::RequestHead;

    #[test]
    fn heads_tell_whether_the_connection_can_come_back() {
        let get = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        assert_eq!(
            RequestHead::parse(get),
            Some(RequestHead { len: get.len(), body: 0, one_at_a_time: true, close: false })
        );
        let post = b"POST /send HTTP/1.1\r\ncontent-length: 5\r\nconnection: keep-alive, Close\r\n\r\nhello";
        assert_eq!(
            RequestHead::parse(post),
            Some(RequestHead { len: post.len() - 5, body: 5, one_at_a_time: true, close: true })
        );
        assert_eq!(RequestHead::parse(b"GET / HTTP/1.1\r\nhost:"), None, "not all there yet");
        for unusual in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n",
            b"\x00\x01garbage\r\n\r\n",
        ] {
            let head = RequestHead::parse(unusual).unwrap();
            assert!(!head.one_at_a_time, "{}", String::from_utf8_lossy(unusual));
        }
    }
}
