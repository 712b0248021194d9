//! The ACME flags (`--acme DOMAIN` ...): what [`crate::acme`] needs to get certificates.

use std::path::PathBuf;

use clap::Args;

pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
pub const DEFAULT_ACME_CACHE: &str = "./acme";

/// The ACME flags, flattened into [`crate::Config`].
#[derive(Debug, Clone, Args)]
pub struct AcmeArgs {
    /// Serve HTTPS on --listen with a certificate for this domain, got and renewed
    /// automatically from an ACME CA (TLS-ALPN-01: the CA connects to port 443 of the
    /// domain, which must reach --listen). Repeat the flag, or comma-separate (also in the
    /// env var); one certificate names them all.
    #[arg(long, env = "SSECHAT_ACME", value_name = "DOMAIN", value_delimiter = ',', value_parser = parse_domain, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub acme: Vec<String>,

    /// The e-mail address the CA may write to about the certificates (expiry, revocation).
    #[arg(long, env = "SSECHAT_ACME_CONTACT", value_name = "EMAIL", value_parser = parse_contact)]
    pub acme_contact: Option<String>,

    /// Where the ACME account key and the certificates are kept across restarts (created if
    /// missing; keep it private: it holds private keys).
    #[arg(long, env = "SSECHAT_ACME_CACHE", value_name = "DIR", default_value = DEFAULT_ACME_CACHE)]
    pub acme_cache: PathBuf,

    /// The ACME directory to order from.
    #[arg(long, env = "SSECHAT_ACME_DIRECTORY", value_name = "URL", default_value = LETS_ENCRYPT_PRODUCTION, value_parser = parse_directory)]
    pub acme_directory: String,

    /// Order from Let's Encrypt's staging directory (untrusted certificates, generous rate
    /// limits): to try a setup out.
    #[arg(long, env = "SSECHAT_ACME_STAGING", conflicts_with = "acme_directory", value_parser = super::boolean)]
    pub acme_staging: bool,

    /// Trust only the CA certificates in this PEM file for the ACME directory's own HTTPS,
    /// instead of the public roots: for a private ACME CA (step-ca, pebble).
    #[arg(long, env = "SSECHAT_ACME_DIRECTORY_CA", value_name = "FILE")]
    pub acme_directory_ca: Option<PathBuf>,
}

impl AcmeArgs {
    /// The defaults, as if started with no ACME flag.
    pub fn defaults() -> Self {
        Self {
            acme: Vec::new(),
            acme_contact: None,
            acme_cache: PathBuf::from(DEFAULT_ACME_CACHE),
            acme_directory: LETS_ENCRYPT_PRODUCTION.to_owned(),
            acme_staging: false,
            acme_directory_ca: None,
        }
    }

    /// Whether certificates come from ACME.
    pub fn enabled(&self) -> bool {
        !self.acme.is_empty()
    }

    /// The directory orders go to: staging, as asked, or the default.
    pub fn directory_url(&self) -> &str {
        if self.acme_staging { LETS_ENCRYPT_STAGING } else { &self.acme_directory }
    }
}

fn parse_domain(s: &str) -> Result<String, String> {
    let domain = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if domain.contains('*') {
        return Err(format!("{s:?}: TLS-ALPN-01 cannot validate wildcard names"));
    }
    if domain.len() > 253 || !domain.contains('.') || !domain.split('.').all(label_ok) {
        return Err(format!("{s:?} is not a domain name like chat.example.com"));
    }
    Ok(domain)
}

fn parse_contact(s: &str) -> Result<String, String> {
    let email = s.strip_prefix("mailto:").unwrap_or(s);
    match email.split_once('@') {
        Some((user, host))
            if !user.is_empty() && host.contains('.') && !email.contains(char::is_whitespace) =>
        {
            Ok(email.to_owned())
        }
        _ => Err(format!("{s:?} is not an e-mail address like admin@example.com")),
    }
}

fn parse_directory(s: &str) -> Result<String, String> {
    let bad = |why: &str| format!("{s:?} is not an ACME directory URL like {LETS_ENCRYPT_STAGING}: {why}");
    let uri: axum::http::Uri = s.parse().map_err(|e| bad(&format!("{e}")))?;
    if !uri.scheme_str().is_some_and(|scheme| scheme.eq_ignore_ascii_case("https")) {
        return Err(bad("it must start with https://"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it names no host"));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_checked() {
        assert_eq!(parse_domain("Chat.Example.com.").unwrap(), "chat.example.com");
        assert!(parse_domain("*.example.com").unwrap_err().contains("wildcard"));
        assert!(parse_domain("localhost").is_err());
        assert!(parse_domain("https://chat.example.com").is_err());
        assert!(parse_domain("chat.example.com:443").is_err());
        assert!(parse_domain("-a.example.com").is_err());
    }

    #[test]
    fn contacts_are_email_addresses() {
        assert_eq!(parse_contact("mailto:a@example.com").unwrap(), "a@example.com");
        assert!(parse_contact("admin").unwrap_err().contains("not an e-mail address"));
        assert!(parse_contact("a b@example.com").is_err());
    }

    #[test]
    fn directories_are_https_urls() {
        assert!(parse_directory("https://127.0.0.1:14000/dir").is_ok());
        assert!(parse_directory("http://ca.example/dir").unwrap_err().contains("must start with https://"));
        assert!(parse_directory("not a url").unwrap_err().contains("not an ACME directory URL"));
    }

    #[test]
    fn staging_picks_lets_encrypt_staging_and_excludes_a_directory() {
        use clap::Parser;
        let c =
            crate::config::Config::try_parse_from(["ssechat", "--acme", "a.example.com", "--acme-staging"])
                .unwrap();
        assert_eq!(c.acme.directory_url(), LETS_ENCRYPT_STAGING);
        let both = ["ssechat", "--acme-staging", "--acme-directory", "https://ca.example/dir"];
        assert!(crate::config::Config::try_parse_from(both).is_err());
        assert_eq!(crate::config::Config::defaults().acme.directory_url(), LETS_ENCRYPT_PRODUCTION);
    }
}
