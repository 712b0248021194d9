//! Opening one stream connection from a chosen source address, fresh (the stream request
//! straight away) or warm (the room page first, then the stream on the same keep-alive
//! connection, the path a browser takes).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::http::{ResponseHead, StreamRequests, read_head, read_response};

/// How long a connect may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects from `source`, sends `requests` and reads the stream's response head. Returns
/// the socket and whatever stream bytes arrived with the head (a replay can come with it).
pub async fn open_stream(
    source: Ipv4Addr,
    server: SocketAddr,
    requests: &StreamRequests,
) -> Result<(TcpStream, Vec<u8>), String> {
    let mut stream = connect_from(source, server).await?;
    let mut buf = Vec::new();
    if let Some(page) = &requests.page {
        send(&mut stream, page).await?;
        let head = read_response(&mut stream, &mut buf).await.map_err(|e| format!("room page: {e}"))?;
        expect_ok(head, "room page")?;
    }
    send(&mut stream, &requests.stream).await?;
    let head = read_head(&mut stream, &mut buf).await.map_err(|e| format!("stream: {e}"))?;
    expect_ok(head, "stream")?;
    Ok((stream, buf))
}

/// A TCP connection from `source` (one of 127.0.0.x), so many connections can exceed one
/// address's port range.
pub async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0))).map_err(|e| format!("bind {source}: {e}"))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(server))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect from {source}: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn send(stream: &mut TcpStream, request: &str) -> Result<(), String> {
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))
}

fn expect_ok(head: ResponseHead, what: &str) -> Result<(), String> {
    match head.status {
        200 => Ok(()),
        status => Err(format!("{what} answered {status}, not 200")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Target;
    use crate::http::Endpoint;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;

    /// Reads one request head off `reader` and returns its request line.
    async fn request_line(reader: &mut BufReader<TcpStream>) -> String {
        let mut first = String::new();
        reader.read_line(&mut first).await.expect("a request line");
        let mut line = String::new();
        while line != "\r\n" {
            line.clear();
            reader.read_line(&mut line).await.expect("a header line");
        }
        first
    }

    /// A server for one connection: answers the room page in two chunked writes, then the
    /// stream request with a head and a first frame. Returns the request lines it got.
    async fn one_connection_server(listener: TcpListener) -> Vec<String> {
        let (socket, _) = listener.accept().await.expect("a connection");
        let mut reader = BufReader::new(socket);
        let page = request_line(&mut reader).await;
        let w = reader.get_mut();
        w.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\n<htm").await.unwrap();
        w.write_all(b"\r\n2\r\nl>\r\n0\r\n\r\n").await.unwrap();
        let stream = request_line(&mut reader).await;
        let w = reader.get_mut();
        w.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nid: 1\n").await.unwrap();
        vec![page, stream]
    }

    #[tokio::test]
    async fn a_warm_stream_loads_the_page_then_streams_on_the_same_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let answering = tokio::spawn(one_connection_server(listener));
        let endpoint = Endpoint::parse(&format!("http://{server}")).unwrap();
        let requests = endpoint.stream_requests(Target::Ssechat, "lobby", true, None);
        let opening = open_stream(Ipv4Addr::LOCALHOST, server, &requests);
        let (_stream, first) = tokio::time::timeout(Duration::from_secs(10), opening).await.unwrap().unwrap();
        let lines = tokio::time::timeout(Duration::from_secs(10), answering).await.unwrap().unwrap();
        assert_eq!(lines, ["GET /rooms/lobby HTTP/1.1\r\n", "GET /events?room=lobby HTTP/1.1\r\n"]);
        // The first frame may follow the head in a later packet; what came with it is a prefix.
        assert!(b"id: 1\n".starts_with(&first), "{first:?}");
    }
}
