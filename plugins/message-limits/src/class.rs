//! Client classes: the first class whose networks and authentication state
//! match the session decides the limits; the `default` class otherwise.
//! Trusts the host's `client_ip` and `auth_user`; nothing the client says.

use std::net::IpAddr;

use postern_sdk::Session;
use postern_sdk::net::{self, IpNet};

use crate::config::OnKvError;

/// The limits of one class (absent: unlimited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_message_size: Option<u64>,
    pub max_recipients: Option<u32>,
    pub max_messages: Option<u32>,
    pub max_connections_rate: Option<u32>,
    pub window_ms: u64,
}

/// One client class.
#[derive(Debug, Clone)]
pub struct Class {
    pub name: String,
    /// Empty: any address.
    pub networks: Vec<IpNet>,
    /// Some(true): authenticated sessions only; Some(false): unauthenticated only.
    pub authenticated: Option<bool>,
    pub limits: Limits,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub classes: Vec<Class>,
    pub default: Class,
    pub on_kv_error: OnKvError,
}

/// The client address, IPv4-mapped IPv6 folded to IPv4, zone id dropped.
pub fn client_ip(session: &Session) -> Option<IpAddr> {
    net::parse_client(&session.client_ip())
}

/// The counter key part for the client: the canonical address, or the raw
/// text (made safe) when the host sent something unparsable.
pub fn client_key(session: &Session) -> String {
    match client_ip(session) {
        Some(ip) => ip.to_string(),
        None => session
            .client_ip()
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect(),
    }
}

impl Class {
    fn matches(&self, ip: Option<IpAddr>, authenticated: bool) -> bool {
        if let Some(want) = self.authenticated
            && want != authenticated
        {
            return false;
        }
        self.networks.is_empty()
            || ip.is_some_and(|ip| self.networks.iter().any(|n| n.contains(&ip)))
    }
}

impl Settings {
    /// The class of this session (first match wins).
    pub fn class_of(&self, session: &Session) -> &Class {
        let ip = client_ip(session);
        let authenticated = session.auth_user().is_some();
        self.classes
            .iter()
            .find(|c| c.matches(ip, authenticated))
            .unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{session, settings};

    #[test]
    fn first_match_wins() {
        let s = settings(
            r#"{"classes": [
                {"name": "users", "authenticated": true},
                {"name": "lan", "networks": ["10.0.0.0/8", "fd00::/8"]},
                {"name": "anon-lan6", "networks": ["2001:db8::/32"], "authenticated": false}
            ]}"#,
        );
        let table = [
            ("10.1.2.3", None, "lan"),
            ("10.1.2.3", Some("alice"), "users"),
            ("::ffff:10.9.9.9", None, "lan"),
            ("fd12::1", None, "lan"),
            ("2001:db8::5", None, "anon-lan6"),
            ("2001:db8::5", Some("bob"), "users"),
            ("192.0.2.1", None, "default"),
            ("192.0.2.1", Some("carol"), "users"),
            ("not-an-ip", None, "default"),
        ];
        for (ip, user, want) in table {
            let sess = crate::testutil::session_with(ip, |d| d.auth_user = user.map(String::from));
            assert_eq!(s.class_of(&sess).name, want, "{ip} {user:?}");
        }
    }

    #[test]
    fn keys() {
        assert_eq!(super::client_key(&session("::FFFF:192.0.2.1")), "192.0.2.1");
        assert_eq!(super::client_key(&session("2001:DB8::1")), "2001:db8::1");
        assert_eq!(super::client_key(&session("we ird\n")), "weird");
    }
}
