//! Bans: `ssechat ban USER|IP|CIDR [--room ROOM] [--for DUR]`.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::auth::Identity;
use crate::domain::{Author, FieldError, RoomName, Timestamp};

/// Whom a ban is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BanTarget {
    User(Author),
    /// An address or range. IPv6 clients are known by their /64 (as the rate limits know
    /// them), so a narrower IPv6 range is widened to its /64.
    Net(IpNet),
}

impl BanTarget {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self::net(IpNet::from(ip)));
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Self::net(net));
        }
        if s.chars().next().is_some_and(|c| c.is_ascii_digit()) && s.contains(['.', ':', '/']) {
            return Err(FieldError::new("target", format!("{s:?} is not an IP address or CIDR range")));
        }
        Author::parse(s)
            .map(BanTarget::User)
            .map_err(|e| FieldError::new("target", format!("{}; or an IP address or CIDR range", e.problem)))
    }

    fn net(net: IpNet) -> Self {
        match net {
            IpNet::V6(v6) if v6.prefix_len() > 64 => {
                BanTarget::Net(IpNet::new(v6.network().into(), 64).expect("64 fits").trunc())
            }
            other => BanTarget::Net(other.trunc()),
        }
    }

    fn covers(&self, who: &Identity, client: IpAddr) -> bool {
        match self {
            BanTarget::User(name) => who.user() == Some(name),
            BanTarget::Net(net) => net.contains(&client),
        }
    }
}

impl fmt::Display for BanTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BanTarget::User(name) => f.write_str(name.as_str()),
            BanTarget::Net(net) => write!(f, "{net}"),
        }
    }
}

/// `ssechat ban TARGET [--room ROOM] [--for DUR]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub target: BanTarget,
    /// `None`: every room.
    pub room: Option<RoomName>,
    /// `None`: until lifted.
    pub until: Option<Timestamp>,
}

impl Ban {
    /// Whether the ban keeps `who`, asking from `client`, out of `room` at `now`.
    pub fn applies(&self, who: &Identity, client: IpAddr, room: &RoomName, now: Timestamp) -> bool {
        self.until.is_none_or(|until| until > now)
            && self.room.as_ref().is_none_or(|r| r == room)
            && self.target.covers(who, client)
    }

    /// "banned from room x until ...", for the refusal.
    pub fn describe(&self) -> String {
        let scope = match &self.room {
            Some(room) => format!("from room {:?}", room.as_str()),
            None => "from every room".to_owned(),
        };
        let until = match self.until {
            Some(until) => format!("until {}", until.rfc3339()),
            None => "until the ban is lifted".to_owned(),
        };
        format!("{} is banned {scope} {until}", self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Identity {
        Identity::User { name: Author::parse(name).unwrap(), admin: false }
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    #[test]
    fn bans_cover_users_and_ranges_in_scope_until_they_expire() {
        let client: IpAddr = "10.1.2.3".parse().unwrap();
        let now = Timestamp::now();
        let ban = |target: &str, room_name: Option<&str>, until: Option<Timestamp>| Ban {
            target: BanTarget::parse(target).unwrap(),
            room: room_name.map(room),
            until,
        };
        assert!(ban("10.1.0.0/16", None, None).applies(&Identity::Guest, client, &room("x"), now));
        assert!(!ban("10.2.0.0/16", None, None).applies(&Identity::Guest, client, &room("x"), now));
        assert!(ban("ana", Some("x"), None).applies(&user("ana"), client, &room("x"), now));
        assert!(!ban("ana", Some("x"), None).applies(&user("ana"), client, &room("y"), now));
        assert!(!ban("ana", None, None).applies(&Identity::Guest, client, &room("y"), now));
        let past = Timestamp::from_millis(now.millis() - 1000);
        assert!(!ban("ana", None, past).applies(&user("ana"), client, &room("y"), now));
        assert_eq!(BanTarget::parse("2001:db8::1").unwrap().to_string(), "2001:db8::/64");
        assert!(BanTarget::parse("10.0.0.300").unwrap_err().problem.contains("not an IP"));
    }
}
