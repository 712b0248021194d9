//! The socket as hyper sees it while it answers a request: the bytes already read put back
//! in front, what hyper reads counted, a stall cut-off on writes, and flags the connection
//! loop reads between polls.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What the connection learns from the socket while hyper has it.
#[derive(Clone, Default)]
pub struct Watch(pub Arc<WatchFlags>);

#[derive(Default)]
pub struct WatchFlags {
    /// Something was written: the answer has started.
    pub wrote: AtomicBool,
    /// The answer says `connection: close`.
    pub closing: AtomicBool,
    /// The client stopped reading for the stall timeout.
    pub stalled: Arc<AtomicBool>,
}

impl Watch {
    pub fn wrote(&self) -> bool {
        self.0.wrote.load(Ordering::Relaxed)
    }

    pub fn closing(&self) -> bool {
        self.0.closing.load(Ordering::Relaxed)
    }
}

/// A socket with bytes already read from it put back in front, for hyper. It also gives
/// up on a client that takes more than the stall timeout to accept what is written, which
/// hyper itself never would.
pub struct Rewind {
    pub prefix: Bytes,
    pub socket: TcpStream,
    /// Bytes given to hyper, prefix included.
    pub fed: u64,
    /// The most bytes hyper may read (one request, head and body): what the client sent
    /// after it, even at once, stays for the connection loop.
    limit: u64,
    stall: Duration,
    /// Armed while a write is waiting for the socket.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    watch: Watch,
}

impl Rewind {
    pub fn new(socket: TcpStream, prefix: Bytes, stall: Duration, watch: Watch) -> Self {
        Self { prefix, socket, fed: 0, limit: u64::MAX, stall, stalled: None, watch }
    }

    /// Lets hyper read no more than `limit` bytes.
    pub fn limited(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    /// Passes a write's outcome through, turning a wait longer than the stall timeout
    /// into an error that closes the connection.
    fn watch_write<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let stall = self.stall;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.watch.0.stalled.store(true, Ordering::Relaxed);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let room = usize::try_from(self.limit - self.fed).unwrap_or(usize::MAX);
        if room == 0 {
            // The whole request is read. Hyper waits here until it is told to stop; the
            // next request is the connection loop's.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let poll = if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining()).min(room);
            buf.put_slice(&self.prefix.split_to(n));
            Poll::Ready(Ok(()))
        } else if room >= buf.remaining() {
            Pin::new(&mut self.socket).poll_read(cx, buf)
        } else {
            // The rest of a body, smaller than hyper's buffer: read no further than it.
            let mut rest = vec![0u8; room];
            let mut limited = ReadBuf::new(&mut rest);
            let poll = Pin::new(&mut self.socket).poll_read(cx, &mut limited);
            buf.put_slice(limited.filled());
            poll
        };
        self.fed += (buf.filled().len() - before) as u64;
        poll
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.watch.0.wrote.store(true, Ordering::Relaxed);
        let poll = Pin::new(&mut self.socket).poll_write(cx, buf);
        self.watch_write(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.watch.0.wrote.store(true, Ordering::Relaxed);
        let poll = Pin::new(&mut self.socket).poll_write_vectored(cx, bufs);
        self.watch_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.socket).poll_flush(cx);
        self.watch_write(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}
