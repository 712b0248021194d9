//! Who a request comes from, and which site the browser used, when proxies stand between.
//!
//! Forwarding headers are claims anyone can write; they count only when the TCP peer is a
//! proxy we were told to trust (`--trusted-proxy`). The chain is then read from the right
//! (the hops nearest to us), skipping trusted proxies: the first address that is not one is
//! the client. An entry there that is not an address (`unknown`, an obfuscated `_name`,
//! garbage) makes the client the peer itself: we cannot tell who sent it, and any entry
//! further left was written by someone we don't trust.
//!
//! `Forwarded` (RFC 7239) is read when the request has one, otherwise `X-Forwarded-For`;
//! never a mix, so a client cannot add to one what the proxy wrote in the other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::http::{HeaderMap, header};
use ipnet::IpNet;

use super::site::{Port, Site};

/// The proxies whose forwarding headers are believed (`--trusted-proxy`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self(nets.into_iter().map(|net| net.trunc()).collect())
    }

    /// True when `ip` (an IPv4-mapped IPv6 address counting as its IPv4 address) is one.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer's, or, from a trusted proxy, the one it reports.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut nearest = peer;
        for hop in chain(headers).into_iter().rev() {
            match hop {
                Some(ip) if self.trusts(ip) => nearest = ip,
                Some(ip) => return ip,
                None => return peer,
            }
        }
        // Every hop is a trusted proxy: the farthest one is as close to the client as we get.
        nearest
    }

    /// The site the browser sent the request to. From a trusted proxy, the host and scheme
    /// it reports (`Forwarded: host=;proto=`, else `X-Forwarded-Host`/`-Proto`), else its
    /// `Host` with any port allowed when it names none (proxies often drop it); from anyone
    /// else, `Host`. Otherwise a missing port means the scheme's default.
    pub fn site(&self, peer: IpAddr, headers: &HeaderMap) -> Site {
        let host = header_text(headers, header::HOST.as_str()).unwrap_or_default();
        if !self.trusts(peer) {
            return Site::new(None, host, Port::Default);
        }
        let (proto, forwarded_host) = if headers.contains_key(header::FORWARDED) {
            let elements = forwarded(headers);
            let first = |pick: fn(&Element) -> Option<&String>| elements.iter().find_map(pick).cloned();
            (first(|e| e.proto.as_ref()), first(|e| e.host.as_ref()))
        } else {
            let first = |name| list(headers, name).into_iter().next().map(str::to_owned);
            (first("x-forwarded-proto"), first("x-forwarded-host"))
        };
        match forwarded_host {
            // As the browser sent it: a missing port is the default one.
            Some(forwarded_host) => Site::new(proto.as_deref(), &forwarded_host, Port::Default),
            // Rewritten by the proxy, which may have dropped the port (nginx's `$host`).
            None => Site::new(proto.as_deref(), host, Port::Any),
        }
    }
}

/// Parses a `--trusted-proxy` value: a CIDR range, or one address (a /32 or /128).
pub fn parse_trusted_proxy(value: &str) -> Result<IpNet, String> {
    let value = value.trim();
    value.parse::<IpNet>().or_else(|_| value.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
        format!("{value:?} is not an IP address or CIDR range (like 127.0.0.1, 10.0.0.0/8 or fd00::/8)")
    })
}

/// The addresses of a forwarding chain, farthest first; `None` for an entry that is not one.
fn chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    if headers.contains_key(header::FORWARDED) {
        forwarded(headers).into_iter().filter_map(|e| e.node).collect()
    } else {
        list(headers, "x-forwarded-for").into_iter().map(parse_node).collect()
    }
}

/// One value of a header, if it is text.
fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The comma-separated entries of every `name` header, in order, empty ones skipped. A
/// value that is not text counts as one unreadable entry.
fn list<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("(not text)").split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect()
}

/// An address as forwarding headers write it, port and brackets dropped: `192.0.2.1`,
/// `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    let (ip, port) = match node.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']')?;
            let port = if after.is_empty() { None } else { Some(after.strip_prefix(':')?) };
            (IpAddr::V6(ip.parse::<Ipv6Addr>().ok()?), port)
        }
        None => match node.rsplit_once(':') {
            Some((ip, port)) if !ip.contains(':') => (IpAddr::V4(ip.parse::<Ipv4Addr>().ok()?), Some(port)),
            _ => (node.parse::<IpAddr>().ok()?, None),
        },
    };
    port.is_none_or(is_port).then(|| ip.to_canonical())
}

/// A port number, or an obfuscated one (`_abc`, RFC 7239 section 6.3).
fn is_port(port: &str) -> bool {
    port.parse::<u16>().is_ok() || obfuscated(port)
}

fn obfuscated(value: &str) -> bool {
    value.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    })
}

/// One `Forwarded` element (one hop), with the parameters we read.
#[derive(Debug, Default)]
struct Element {
    /// `for=`: `Some(None)` when it is there but is no address (or the element is garbage).
    node: Option<Option<IpAddr>>,
    host: Option<String>,
    proto: Option<String>,
}

/// The elements of every `Forwarded` header, in order.
fn forwarded(headers: &HeaderMap) -> Vec<Element> {
    let mut elements = Vec::new();
    for value in headers.get_all(header::FORWARDED) {
        let Ok(value) = value.to_str() else {
            elements.push(Element { node: Some(None), ..Element::default() });
            continue;
        };
        for element in split_unquoted(value, ',').into_iter().map(str::trim).filter(|e| !e.is_empty()) {
            elements.push(parse_element(element));
        }
    }
    elements
}

/// `for=192.0.2.60;proto=http;host=example.com`; names are case-insensitive, values tokens
/// or quoted strings. A malformed element is a hop we can't read.
fn parse_element(element: &str) -> Element {
    let mut parsed = Element::default();
    for pair in split_unquoted(element, ';').into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Element { node: Some(None), ..Element::default() };
        };
        let value = unquote(value.trim());
        match name.trim().to_ascii_lowercase().as_str() {
            "for" => parsed.node = Some(parse_node(&value)),
            "host" => parsed.host = Some(value),
            "proto" => parsed.proto = Some(value),
            _ => {}
        }
    }
    parsed
}

/// Splits on `separator` where it is not inside a quoted string.
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A token as it is, or a quoted string without its quotes and escapes.
fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        None => value.to_owned(),
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| parse_trusted_proxy(n).unwrap()))
    }

    const PROXY: &str = "10.0.0.1";

    /// The client a request from the trusted proxy 10.0.0.1 with these headers comes from.
    fn client(pairs: &[(&'static str, &str)]) -> IpAddr {
        proxies(&["10.0.0.0/8"]).client(ip(PROXY), &headers(pairs))
    }

    #[test]
    fn trusted_proxy_values_are_ranges_or_single_addresses() {
        assert_eq!(parse_trusted_proxy("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_trusted_proxy("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
        assert_eq!(parse_trusted_proxy("::1").unwrap().to_string(), "::1/128");
        assert_eq!(parse_trusted_proxy(" fd00::/8 ").unwrap().to_string(), "fd00::/8");
        for bad in ["10.0.0.0/33", "localhost", "10.0.0.300", "", "10.0.0.0/"] {
            let err = parse_trusted_proxy(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")) && err.contains("CIDR"), "{err}");
        }
        let p = proxies(&["127.0.0.1", "10.1.2.3/8"]);
        assert!(p.trusts(ip("127.0.0.1")) && !p.trusts(ip("127.0.0.2")));
        assert!(p.trusts(ip("10.200.0.1")), "host bits in a range are ignored");
        assert!(p.trusts(ip("::ffff:127.0.0.1")), "IPv4-mapped counts as IPv4");
    }

    #[test]
    fn forwarding_headers_count_only_from_a_trusted_peer() {
        let h = headers(&[("x-forwarded-for", "203.0.113.7"), ("forwarded", "for=203.0.113.8")]);
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(p.client(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        assert_eq!(TrustedProxies::default().client(ip(PROXY), &h), ip(PROXY));
        assert_eq!(p.client(ip("::ffff:192.0.2.1"), &h), ip("192.0.2.1"), "a mapped peer is IPv4");
    }

    #[test]
    fn the_client_is_the_rightmost_address_that_is_not_a_trusted_proxy() {
        assert_eq!(client(&[("x-forwarded-for", "203.0.113.7")]), ip("203.0.113.7"));
        assert_eq!(client(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7")]), ip("203.0.113.7"));
        assert_eq!(client(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.9.9.9")]), ip("203.0.113.7"));
        let split = [("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "203.0.113.7, 10.2.2.2")];
        assert_eq!(client(&split), ip("203.0.113.7"), "several headers are one list, in order");
        assert_eq!(client(&[("x-forwarded-for", "10.3.3.3, 10.2.2.2")]), ip("10.3.3.3"), "all trusted");
        assert_eq!(client(&[]), ip(PROXY), "no header: the peer");
        assert_eq!(client(&[("x-forwarded-for", "203.0.113.7,, ")]), ip("203.0.113.7"), "empty entries");
    }

    #[test]
    fn an_unreadable_entry_makes_the_client_the_peer() {
        for spoof in [
            "1.1.1.1, unknown",
            "1.1.1.1, _hidden",
            "1.1.1.1, garbage",
            "1.1.1.1, 203.0.113.7:99999",
            "1.1.1.1, [203.0.113.7]",
            "1.1.1.1, 2001:db8::1]:80",
            "1.1.1.1, 203.0.113.7 203.0.113.8",
        ] {
            assert_eq!(client(&[("x-forwarded-for", spoof)]), ip(PROXY), "{spoof}");
        }
        assert_eq!(client(&[("forwarded", "for=1.1.1.1, for=unknown")]), ip(PROXY));
        assert_eq!(client(&[("forwarded", "for=1.1.1.1, for=_hidden")]), ip(PROXY));
        assert_eq!(client(&[("forwarded", "for=1.1.1.1, nonsense")]), ip(PROXY));
        assert_eq!(client(&[("forwarded", "for=\"_gazonk\", for=10.2.2.2")]), ip(PROXY));
        // Further left than the client, junk changes nothing.
        assert_eq!(client(&[("x-forwarded-for", "unknown, 203.0.113.7")]), ip("203.0.113.7"));
    }

    #[test]
    fn ports_and_brackets_are_stripped() {
        assert_eq!(client(&[("x-forwarded-for", "203.0.113.7:5555")]), ip("203.0.113.7"));
        assert_eq!(client(&[("x-forwarded-for", "[2001:db8::1]")]), ip("2001:db8::1"));
        assert_eq!(client(&[("x-forwarded-for", "[2001:db8::1]:80")]), ip("2001:db8::1"));
        assert_eq!(client(&[("x-forwarded-for", "2001:db8::1")]), ip("2001:db8::1"));
        assert_eq!(client(&[("x-forwarded-for", "::ffff:203.0.113.7")]), ip("203.0.113.7"));
        assert_eq!(client(&[("forwarded", "for=\"[2001:db8::1]:4711\"")]), ip("2001:db8::1"));
        assert_eq!(client(&[("forwarded", "for=\"203.0.113.7:_p1\"")]), ip("203.0.113.7"));
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_they_never_mix() {
        let both = [("x-forwarded-for", "203.0.113.9"), ("forwarded", "for=203.0.113.7")];
        assert_eq!(client(&both), ip("203.0.113.7"));
        // Forwarded names only the proxy: X-Forwarded-For is not consulted.
        let both = [("x-forwarded-for", "203.0.113.9"), ("forwarded", "for=10.2.2.2")];
        assert_eq!(client(&both), ip("10.2.2.2"));
        let rfc = "for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\";proto=https;by=10.0.0.2";
        assert_eq!(client(&[("forwarded", rfc)]), ip("2001:db8:cafe::17"));
        let quoted = "For=\"203.0.113.7\";host=\"a,b;c\", for=10.2.2.2";
        assert_eq!(client(&[("forwarded", quoted)]), ip("203.0.113.7"), "separators inside quotes");
        assert_eq!(client(&[("forwarded", "proto=https")]), ip(PROXY), "an element without for=");
    }

    #[test]
    fn the_site_is_what_the_browser_used() {
        let p = proxies(&["127.0.0.1"]);
        let nginx = headers(&[
            ("host", "127.0.0.1:4000"),
            ("x-forwarded-for", "127.0.0.1"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "127.0.0.1:8080"),
        ]);
        let site = p.site(ip("127.0.0.1"), &nginx);
        assert!(site.admits("http://127.0.0.1:8080"), "{site}");
        assert!(!site.admits("https://127.0.0.1:8080") && !site.admits("http://127.0.0.1:4000"));
        assert!(!site.admits("http://evil.example:8080") && !site.admits("null"));
        // The same headers from a peer that is not trusted: only Host counts.
        let direct = p.site(ip("127.0.0.2"), &nginx);
        assert!(direct.admits("http://127.0.0.1:4000") && !direct.admits("http://127.0.0.1:8080"));

        let rfc =
            headers(&[("host", "node:4000"), ("forwarded", "for=1.2.3.4;host=Chat.Example;proto=https")]);
        let site = p.site(ip("127.0.0.1"), &rfc);
        assert!(site.admits("https://chat.example") && !site.admits("http://chat.example"), "{site}");
        assert!(!site.admits("https://chat.example:8443"), "a forwarded host is exact");
        // A proxy that dropped the port (nginx `Host $host`): any port of the host.
        let dropped = headers(&[("host", "127.0.0.1")]);
        assert!(p.site(ip("127.0.0.1"), &dropped).admits("http://127.0.0.1:8080"));
        assert!(!p.site(ip("127.0.0.1"), &dropped).admits("http://127.0.0.2:8080"));
    }
}
