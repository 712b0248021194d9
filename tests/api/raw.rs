//! A raw HTTP/1.1 connection for tests that care about what goes over the socket: requests
//! written by hand, responses read one by one (bodies by length or chunks; streams left open).

use std::collections::BTreeMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::WAIT;

/// One raw HTTP/1.1 connection, read response by response.
pub struct Raw {
    pub socket: TcpStream,
    /// Read and not yet used.
    pub buffered: Vec<u8>,
}

/// A response: status, headers (lower-case names), and the body read so far.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Raw {
    pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> Self {
        Raw { socket: TcpStream::connect(addr).await.unwrap(), buffered: Vec::new() }
    }

    /// Connects from the loopback address `source` (127.0.0.2, ...): another client.
    pub async fn connect_from(source: &str, addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{source}:0").parse().unwrap())?;
        Ok(Raw { socket: socket.connect(addr).await?, buffered: Vec::new() })
    }

    pub async fn send(&mut self, request: &str) {
        self.socket.write_all(request.as_bytes()).await.unwrap();
    }

    /// Reads until `until` is in the buffer; false if the connection closed first.
    pub async fn fill_until(&mut self, until: &[u8]) -> bool {
        tokio::time::timeout(WAIT, async {
            let mut buf = [0u8; 4096];
            while !self.buffered.windows(until.len()).any(|w| w == until) {
                match self.socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => self.buffered.extend_from_slice(&buf[..n]),
                }
            }
            true
        })
        .await
        .expect("the server answers")
    }

    /// The next response's head, and its whole body unless it is a stream.
    pub async fn response(&mut self) -> Answer {
        assert!(self.fill_until(b"\r\n\r\n").await, "closed before a response: {:?}", self.text());
        let end = self.buffered.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head: Vec<u8> = self.buffered.drain(..end).collect();
        let head = String::from_utf8(head).unwrap();
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect();
        let body = self.body(&headers).await;
        Answer { status, headers, body }
    }

    async fn body(&mut self, headers: &BTreeMap<String, String>) -> String {
        if let Some(len) = headers.get("content-length") {
            let len: usize = len.parse().unwrap();
            tokio::time::timeout(WAIT, async {
                while self.buffered.len() < len {
                    let mut buf = [0u8; 4096];
                    let n = self.socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "closed inside a body");
                    self.buffered.extend_from_slice(&buf[..n]);
                }
            })
            .await
            .unwrap();
            return String::from_utf8(self.buffered.drain(..len).collect()).unwrap();
        }
        let stream = headers.get("content-type").is_some_and(|t| t.starts_with("text/event-stream"));
        if stream {
            return String::new(); // read on with `fill_until`
        }
        assert!(self.fill_until(b"0\r\n\r\n").await, "closed inside a chunked body");
        let end = self.buffered.windows(5).position(|w| w == b"0\r\n\r\n").unwrap() + 5;
        String::from_utf8(self.buffered.drain(..end).collect()).unwrap()
    }

    /// True once the server has closed the connection (after anything still buffered).
    pub async fn closed(&mut self) -> bool {
        !self.fill_until(b"\0never\0").await
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffered).into_owned()
    }
}
