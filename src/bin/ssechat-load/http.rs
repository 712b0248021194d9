//! The little HTTP the tool needs: where to connect, and how a publish request looks.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;

use crate::Target;

/// `http://host:port/prefix`, split into what a socket and a request line need.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`, for connecting and for the `Host` header.
    pub authority: String,
    /// The path prefix, without a trailing slash (often empty).
    pub prefix: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest =
            url.strip_prefix("http://").ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let authority =
            if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
        Ok(Self { authority, prefix: format!("/{path}").trim_end_matches('/').to_owned() })
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
