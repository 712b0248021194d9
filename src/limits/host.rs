//! Which hosts a request may be for: the guard against DNS rebinding.
//!
//! A page on `evil.example` can have its name re-pointed at 127.0.0.1 and then talk to a
//! server there as if it were its own site; the one thing it cannot change is the `Host`
//! its visitors' browsers send (`evil.example`). So a server listening on a loopback address
//! answers only for `localhost` and loopback addresses, plus the names it is told
//! (`--allowed-host`, the host of `--public-url`). A server listening on any other address
//! answers for every host unless `--allowed-host` names some.

use std::net::IpAddr;

use crate::error::AppError;

/// The hosts this server answers for.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    /// Every host: listening on a non-loopback address with no `--allowed-host`.
    any: bool,
    /// `--allowed-host` and the host of `--public-url`, normalized (see [`normalize`]).
    names: Vec<String>,
}

impl AllowedHosts {
    /// For a server listening on `listen`, told `allowed` (`--allowed-host`) and the host
    /// of `--public-url`, if any.
    pub fn new(listen: &str, allowed: &[String], public_host: Option<&str>) -> Self {
        let any = allowed.is_empty() && !listens_on_loopback(listen);
        let names = allowed.iter().map(String::as_str).chain(public_host).map(normalize).collect();
        Self { any, names }
    }

    /// Admits `host` (as `Host` names it, port and all; empty when there is none), or
    /// refuses it with `421 Misdirected Request` naming the host and the flag.
    pub fn check(&self, host: &str) -> Result<(), AppError> {
        let name = normalize(strip_port(host));
        if self.any || name.is_empty() || is_loopback(&name) || self.names.contains(&name) {
            return Ok(());
        }
        let mut served = "localhost and loopback addresses".to_owned();
        if !self.names.is_empty() {
            served = format!("{served} and {}", self.names.join(", "));
        }
        Err(AppError::MisdirectedRequest(format!(
            "this server does not answer for host {name:?}: it answers only for {served} \
             (a guard against DNS rebinding); if browsers reach it under this name, start it with \
             --allowed-host {name} (or SSECHAT_ALLOWED_HOST)"
        )))
    }
}

/// A `--allowed-host` value: a host name or an IP address, without scheme, path or port.
pub fn parse_allowed_host(value: &str) -> Result<String, String> {
    let bad = |why: &str| format!("{value:?} is not a host name like chat.example: {why}");
    let host = value.trim();
    if host.is_empty() {
        return Err(bad("it is empty"));
    }
    if host.contains(['/', '@', '?', '#']) {
        return Err(bad("give the name alone, without scheme or path"));
    }
    if host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
        return Ok(normalize(host));
    }
    if host.contains(':') {
        return Err(bad("give it without a port (every port of the host is accepted)"));
    }
    if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        return Err(bad("only letters, digits, dots, dashes and underscores"));
    }
    Ok(normalize(host))
}

/// True when `listen` (`--listen`) is a loopback address or `localhost`.
fn listens_on_loopback(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().to_canonical().is_loopback();
    }
    is_loopback(&normalize(strip_port(listen)))
}

/// `host` without a `:port` (IPv6 stays in its brackets).
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, _)) if !name.contains(':') => name,
        Some((name, _)) if name.starts_with('[') && name.ends_with(']') => name,
        _ => host,
    }
}

/// One spelling per host: lower case, no trailing dot, IP addresses in their canonical form
/// without brackets (`::ffff:127.0.0.1` is `127.0.0.1`).
fn normalize(host: &str) -> String {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => host,
    }
}

/// `localhost`, or a loopback address (127.0.0.0/8, ::1), normalized.
fn is_loopback(name: &str) -> bool {
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_loopback_only_loopback_hosts_pass_unless_named() {
        let hosts = AllowedHosts::new("127.0.0.1:3000", &[], None);
        for ok in [
            "localhost",
            "LOCALHOST:3000",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.9.9.9:1",
            "[::1]:3000",
            "[::1]",
            "",
            "localhost.",
        ] {
            assert!(hosts.check(ok).is_ok(), "{ok}");
        }
        for refused in
            ["evil.example", "evil.example:3000", "10.0.0.1", "[2001:db8::1]:80", "localhost.evil.example"]
        {
            let e = hosts.check(refused).unwrap_err();
            assert_eq!(e.status(), 421, "{refused}");
        }
        let e = hosts.check("Evil.Example:3000").unwrap_err().to_string();
        assert!(e.contains("\"evil.example\"") && e.contains("--allowed-host evil.example"), "{e}");

        let named = AllowedHosts::new("[::1]:3000", &["chat.example".into()], Some("public.example"));
        for ok in ["chat.example:3000", "CHAT.EXAMPLE", "public.example", "localhost:1"] {
            assert!(named.check(ok).is_ok(), "{ok}");
        }
        assert!(
            named.check("evil.example").unwrap_err().to_string().contains("chat.example, public.example")
        );
        assert!(AllowedHosts::new("localhost:3000", &[], None).check("evil.example").is_err());
    }

    #[test]
    fn elsewhere_any_host_passes_unless_some_are_named() {
        let open = AllowedHosts::new("0.0.0.0:3000", &[], None);
        assert!(open.check("evil.example").is_ok() && open.check("anything:1").is_ok());
        let named = AllowedHosts::new("0.0.0.0:3000", &["chat.example".into()], None);
        assert!(named.check("chat.example:443").is_ok() && named.check("127.0.0.1:3000").is_ok());
        assert!(named.check("evil.example").is_err());
        let v6 = AllowedHosts::new("[::]:3000", &[parse_allowed_host("2001:DB8::1").unwrap()], None);
        assert!(v6.check("[2001:db8::1]:3000").is_ok() && v6.check("[2001:db8::2]").is_err());
    }

    #[test]
    fn allowed_hosts_are_checked() {
        assert_eq!(parse_allowed_host(" Chat.Example ").unwrap(), "chat.example");
        assert_eq!(parse_allowed_host("[::1]").unwrap(), "::1");
        for (bad, why) in [
            ("", "empty"),
            ("https://chat.example", "without scheme"),
            ("chat.example/chat", "without scheme or path"),
            ("chat.example:8080", "without a port"),
            ("chat example", "only letters"),
        ] {
            let e = parse_allowed_host(bad).unwrap_err();
            assert!(e.contains(why) && e.contains("is not a host name"), "{bad}: {e}");
        }
    }
}
