//! The site a browser's request is for, compared with the `Origin` it sends (CSRF).

use std::fmt;

/// What a site's address says about its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Given(u16),
    /// None given: the scheme's default.
    Default,
    /// None given by a proxy that may have dropped it: any port.
    Any,
}

/// Where a browser sends its requests: what an `Origin` header must name for a post to be
/// from a page of this site. Hosts are compared without case; the scheme when it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    scheme: Option<String>,
    host: String,
    port: Port,
}

impl Site {
    /// From `host` or `host:port` (`[v6]:port` for IPv6), with `missing` used when no port
    /// is given (or the port is the scheme's default).
    pub fn new(scheme: Option<&str>, host_and_port: &str, missing: Port) -> Self {
        let scheme = scheme.map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty());
        let host_and_port = host_and_port.trim();
        let split = match host_and_port.rfind(':') {
            Some(i) if !host_and_port[i..].contains(']') => {
                host_and_port[i + 1..].parse::<u16>().ok().map(|port| (&host_and_port[..i], port))
            }
            _ => None,
        };
        let (host, port) = match split {
            Some((host, port)) if Some(port) == scheme.as_deref().and_then(default_port) => (host, missing),
            Some((host, port)) => (host, Port::Given(port)),
            None => (host_and_port, missing),
        };
        Self { scheme, host: host.to_ascii_lowercase(), port }
    }

    /// The site an `Origin` value names (`scheme://host[:port]`), if it names one.
    pub fn of_origin(origin: &str) -> Option<Self> {
        let (scheme, rest) = origin.trim().split_once("://")?;
        default_port(&scheme.to_ascii_lowercase())?;
        (!rest.is_empty() && !rest.contains(['/', '@', '?', '#']))
            .then(|| Site::new(Some(scheme), rest, Port::Default))
    }

    /// Served over https: its cookies are `Secure`.
    pub fn is_https(&self) -> bool {
        self.scheme.as_deref() == Some("https")
    }

    /// The same site reached over TLS: https unless a trusted proxy said otherwise.
    pub fn over_tls(mut self) -> Self {
        self.scheme.get_or_insert_with(|| "https".to_owned());
        self
    }

    /// The host, lower case, without the port (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// True when `origin` (an `Origin` header) is this site.
    pub fn admits(&self, origin: &str) -> bool {
        let Some(other) = Site::of_origin(origin) else { return false };
        let scheme = self.scheme.as_deref().or(other.scheme.as_deref()).unwrap_or("http");
        let port_of = |port: Port| match port {
            Port::Given(n) => Some(n),
            Port::Default | Port::Any => default_port(scheme),
        };
        self.scheme.as_ref().is_none_or(|s| Some(s) == other.scheme.as_ref())
            && !self.host.is_empty()
            && self.host == other.host
            && (self.port == Port::Any || port_of(self.port) == port_of(other.port))
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scheme) = &self.scheme {
            write!(f, "{scheme}://")?;
        }
        f.write_str(&self.host)?;
        match self.port {
            Port::Given(port) => write!(f, ":{port}"),
            Port::Default => Ok(()),
            Port::Any => f.write_str(" (any port)"),
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_compare_like_origins() {
        let direct = Site::new(None, "Chat.Example", Port::Default);
        assert!(direct.admits("http://chat.example") && direct.admits("https://chat.example:443"));
        assert!(!direct.admits("http://chat.example:8080") && !direct.admits("http://chat.example.evil"));
        let https = Site::new(Some("https"), "chat.example:443", Port::Default);
        assert_eq!(https.to_string(), "https://chat.example");
        assert!(https.admits("https://chat.example") && !https.admits("http://chat.example"));
        let v6 = Site::new(Some("http"), "[::1]:8080", Port::Default);
        assert!(v6.admits("http://[::1]:8080") && !v6.admits("http://[::1]"));
        for bad in ["null", "", "chat.example", "ftp://chat.example", "https://", "https://a@chat.example"] {
            assert!(!direct.admits(bad), "{bad}");
        }
    }
}
