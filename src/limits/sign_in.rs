//! Failed sign-ins, limited per client and per user name: a guesser gets a few tries, then
//! `429` with `Retry-After`, whether it tries many names from one address or one name from
//! many addresses. Only failures take a token (a user's correct Basic credentials on every
//! request never run out); a client or name with none left is refused before any password
//! is checked. Kept per node.

use std::net::IpAddr;
use std::time::Duration;

use super::{RateLimiter, retry_after};
use crate::error::AppError;

/// Failed sign-ins allowed at once, per client and per name...
pub const SIGN_IN_BURST: u32 = 10;
/// ...and then one more every this often.
pub const SIGN_IN_EVERY: Duration = Duration::from_secs(30);

pub struct SignInLimiter {
    clients: RateLimiter<IpAddr>,
    /// By the skeleton of the name tried, so `Ana` and `ana` are one name.
    names: RateLimiter<String>,
}

impl Default for SignInLimiter {
    fn default() -> Self {
        let rate = 1.0 / SIGN_IN_EVERY.as_secs_f64();
        Self { clients: RateLimiter::new(rate, SIGN_IN_BURST), names: RateLimiter::new(rate, SIGN_IN_BURST) }
    }
}

impl SignInLimiter {
    /// Refuses a sign-in from a client, or for a name, that failed too often lately.
    pub fn admit(&self, client: IpAddr, name: &str) -> Result<(), AppError> {
        let refuse = |who: &str, wait| AppError::RateLimited {
            message: format!("too many failed sign-ins {who}; try again later"),
            retry_after: retry_after(wait),
        };
        self.clients.peek(client).map_err(|wait| refuse("from this client", wait))?;
        self.names.peek(crate::accounts::skeleton(name)).map_err(|wait| refuse("for this name", wait))
    }

    /// Counts a failed sign-in against the client and the name.
    pub fn failed(&self, client: IpAddr, name: &str) {
        let _ = self.clients.check(client);
        let _ = self.names.check(crate::accounts::skeleton(name));
    }
}
