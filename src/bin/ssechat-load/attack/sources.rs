//! The loopback addresses a kind of attacker connects from: `count` addresses from `first`
//! up, all inside 127.0.0.0/8, so the server sees that many clients.

use std::fmt;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    first: Ipv4Addr,
    count: u8,
}

impl Sources {
    /// Refuses addresses off loopback, and ranges that would leave 127.0.0.x.
    pub fn new(first: Ipv4Addr, count: u8) -> Result<Self, String> {
        let [a, b, c, d] = first.octets();
        if !first.is_loopback() {
            return Err(format!("{first} is not a loopback address: attackers only use 127.0.0.0/8"));
        }
        if count == 0 || u16::from(d) + u16::from(count) > 256 || d == 0 {
            return Err(format!("{count} addresses from {first} do not fit in {a}.{b}.{c}.1-255"));
        }
        Ok(Self { first, count })
    }

    /// The address of attacker `n`: they take the addresses in turn.
    pub fn nth(&self, n: usize) -> Ipv4Addr {
        let [a, b, c, d] = self.first.octets();
        Ipv4Addr::new(a, b, c, d + (n % usize::from(self.count)) as u8)
    }

    /// Whether the two ranges share an address (then they would share the server's
    /// per-client caps, and neither kind's figures would mean what they say).
    pub fn overlaps(&self, other: &Sources) -> bool {
        let range = |s: &Sources| {
            let [a, b, c, d] = s.first.octets();
            let start = u32::from_be_bytes([a, b, c, 0]) + u32::from(d);
            start..start + u32::from(s.count)
        };
        let (x, y) = (range(self), range(other));
        x.start < y.end && y.start < x.end
    }
}

/// `127.0.0.200`, or `127.0.0.210-250` for a range.
impl fmt::Display for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.count {
            1 => write!(f, "{}", self.first),
            n => write!(f, "{}-{}", self.first, self.first.octets()[3] + (n - 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attackers_take_the_addresses_in_turn() {
        let sources = Sources::new(Ipv4Addr::new(127, 0, 0, 210), 41).unwrap();
        assert_eq!(sources.nth(0), Ipv4Addr::new(127, 0, 0, 210));
        assert_eq!(sources.nth(40), Ipv4Addr::new(127, 0, 0, 250));
        assert_eq!(sources.nth(41), Ipv4Addr::new(127, 0, 0, 210));
        let one = |d| Sources::new(Ipv4Addr::new(127, 0, 0, d), 1).unwrap();
        assert!(sources.overlaps(&one(230)) && one(250).overlaps(&sources));
        assert!(!sources.overlaps(&one(251)) && !sources.overlaps(&one(209)));
        assert_eq!(sources.to_string(), "127.0.0.210-250");
        assert_eq!(Sources::new(Ipv4Addr::new(127, 0, 0, 200), 1).unwrap().to_string(), "127.0.0.200");
    }

    #[test]
    fn only_loopback_addresses_that_fit_are_accepted() {
        let error = Sources::new(Ipv4Addr::new(10, 0, 0, 1), 1).unwrap_err();
        assert!(error.contains("not a loopback address"), "{error}");
        let error = Sources::new(Ipv4Addr::new(127, 0, 0, 250), 10).unwrap_err();
        assert!(error.contains("do not fit in 127.0.0.1-255"), "{error}");
        assert!(Sources::new(Ipv4Addr::new(127, 0, 0, 0), 1).is_err());
        assert!(Sources::new(Ipv4Addr::new(127, 0, 0, 246), 10).is_ok());
    }
}
