//! For plugin unit tests (native builds only): a fake host ([`host`]: log
//! capture, an in-memory kv with TTLs and increments, scripted DNS answers,
//! a settable clock) behind [`crate::host`], builders for sessions and
//! envelope addresses with sensible defaults, and a one-line summary of a
//! verdict. Input: test code (trusted).
//!
//! ```
//! use postern_sdk::testing;
//!
//! let s = testing::session()
//!     .client_ip("192.0.2.1")
//!     .auth_user("bob")
//!     .recipient(testing::address("a@b.test").local(true))
//!     .build();
//! assert_eq!(s.recipients()[0].domain, "b.test");
//! ```

mod fake;

pub use fake::{FakeHost, LogRecord, RecordType, START_MS, host};
pub(crate) use fake::{fake_dns, fake_kv};

use crate::{EnvelopeAddress, EsmtpParam, Reply, Session, SessionData, TlsInfo, Verdict};

/// A session builder. Defaults: id `s1`, client `192.0.2.1:40000` without a
/// name, local `192.0.2.25:25`, listener `smtp`, server `mx.example.org`, no
/// HELO, no TLS, not authenticated, no transaction, no messages yet.
#[derive(Debug, Clone)]
pub struct SessionBuilder(SessionData);

/// A new [`SessionBuilder`].
pub fn session() -> SessionBuilder {
    SessionBuilder(SessionData {
        id: "s1".into(),
        client_ip: "192.0.2.1".into(),
        client_port: 40000,
        client_name: None,
        local_ip: "192.0.2.25".into(),
        local_port: 25,
        listener: "smtp".into(),
        server_name: "mx.example.org".into(),
        helo: None,
        esmtp: false,
        tls: None,
        auth_user: None,
        mail_from: None,
        recipients: Vec::new(),
        messages_accepted: 0,
    })
}

impl SessionBuilder {
    pub fn id(mut self, id: &str) -> Self {
        self.0.id = id.into();
        self
    }
    pub fn client_ip(mut self, ip: &str) -> Self {
        self.0.client_ip = ip.into();
        self
    }
    pub fn client_port(mut self, port: u16) -> Self {
        self.0.client_port = port;
        self
    }
    /// The forward-confirmed reverse DNS name of the client.
    pub fn client_name(mut self, name: &str) -> Self {
        self.0.client_name = Some(name.into());
        self
    }
    pub fn local_ip(mut self, ip: &str) -> Self {
        self.0.local_ip = ip.into();
        self
    }
    pub fn local_port(mut self, port: u16) -> Self {
        self.0.local_port = port;
        self
    }
    pub fn listener(mut self, name: &str) -> Self {
        self.0.listener = name.into();
        self
    }
    pub fn server_name(mut self, name: &str) -> Self {
        self.0.server_name = name.into();
        self
    }
    /// The client greeted with `HELO name`.
    pub fn helo(mut self, name: &str) -> Self {
        self.0.helo = Some(name.into());
        self.0.esmtp = false;
        self
    }
    /// The client greeted with `EHLO name`.
    pub fn ehlo(mut self, name: &str) -> Self {
        self.0.helo = Some(name.into());
        self.0.esmtp = true;
        self
    }
    /// TLS with `protocol` and `cipher`, no client certificate, no SNI.
    pub fn tls(mut self, protocol: &str, cipher: &str) -> Self {
        self.0.tls = Some(TlsInfo {
            protocol: protocol.into(),
            cipher: cipher.into(),
            client_certificate: false,
            server_name: None,
        });
        self
    }
    pub fn tls_info(mut self, tls: TlsInfo) -> Self {
        self.0.tls = Some(tls);
        self
    }
    pub fn auth_user(mut self, user: &str) -> Self {
        self.0.auth_user = Some(user.into());
        self
    }
    /// Authenticated as `user` when `Some`, not authenticated when `None`.
    pub fn auth(mut self, user: Option<&str>) -> Self {
        self.0.auth_user = user.map(String::from);
        self
    }
    pub fn mail_from(mut self, sender: impl Into<EnvelopeAddress>) -> Self {
        self.0.mail_from = Some(sender.into());
        self
    }
    /// Add one accepted recipient.
    pub fn recipient(mut self, rcpt: impl Into<EnvelopeAddress>) -> Self {
        self.0.recipients.push(rcpt.into());
        self
    }
    /// Add `n` accepted recipients `r1@example.net`, `r2@example.net`, ...
    pub fn recipients(mut self, n: usize) -> Self {
        for i in 1..=n {
            let a = address(&format!("r{i}@example.net"));
            self.0.recipients.push(a.build());
        }
        self
    }
    pub fn messages_accepted(mut self, n: u32) -> Self {
        self.0.messages_accepted = n;
        self
    }
    pub fn build(self) -> Session {
        self.0.into()
    }
}

impl From<SessionBuilder> for Session {
    fn from(b: SessionBuilder) -> Session {
        b.0.into()
    }
}

/// An envelope address builder, split as the host splits it: the local part
/// before the last `@`, the domain after it (`""` for `<>` and a bare
/// `postmaster`). Not local, no ESMTP parameters until told.
#[derive(Debug, Clone)]
pub struct AddressBuilder(EnvelopeAddress);

/// A new [`AddressBuilder`] for `address` (`""` for the null sender).
pub fn address(address: &str) -> AddressBuilder {
    let (local_part, domain) = address.rsplit_once('@').unwrap_or((address, ""));
    AddressBuilder(EnvelopeAddress {
        address: address.into(),
        local_part: local_part.into(),
        domain: domain.into(),
        params: Vec::new(),
        is_local: false,
    })
}

impl AddressBuilder {
    /// Whether the host marks it local (one of `local_domains`).
    pub fn local(mut self, is_local: bool) -> Self {
        self.0.is_local = is_local;
        self
    }
    /// Add an ESMTP parameter (`keyword` upper-cased as the host does).
    pub fn param(mut self, keyword: &str, value: Option<&str>) -> Self {
        self.0.params.push(EsmtpParam {
            keyword: keyword.to_ascii_uppercase(),
            value: value.map(String::from),
        });
        self
    }
    pub fn build(self) -> EnvelopeAddress {
        self.0
    }
}

impl From<AddressBuilder> for EnvelopeAddress {
    fn from(b: AddressBuilder) -> EnvelopeAddress {
        b.0
    }
}

/// A verdict as `(kind, code, enhanced, text)`: `("pass", 0, "", "")`,
/// `("reject", 554, "5.7.1", "...")`; kinds are the WIT names (`pass`,
/// `accept`, `accept-with`, `reject`, `defer`, `disconnect`).
pub fn summary(v: &Verdict) -> (&'static str, u16, String, String) {
    let r = |kind, r: &Reply| {
        (
            kind,
            r.code,
            r.enhanced.clone().unwrap_or_default(),
            r.text.clone(),
        )
    };
    match v {
        Verdict::Pass => ("pass", 0, String::new(), String::new()),
        Verdict::Accept => ("accept", 0, String::new(), String::new()),
        Verdict::AcceptWith(x) => r("accept-with", x),
        Verdict::Reject(x) => r("reject", x),
        Verdict::Defer(x) => r("defer", x),
        Verdict::Disconnect(x) => r("disconnect", x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders() {
        let s = session()
            .client_ip("2001:db8::7")
            .ehlo("client.example")
            .auth_user("bob")
            .mail_from(address(""))
            .recipient(address("a@b.test").local(true))
            .recipients(2)
            .tls("TLSv1.3", "TLS13_AES_128_GCM_SHA256")
            .build();
        assert_eq!(s.client_ip(), "2001:db8::7");
        assert!(s.esmtp() && s.helo().as_deref() == Some("client.example"));
        assert_eq!(s.auth_user().as_deref(), Some("bob"));
        assert_eq!(s.mail_from().as_ref().unwrap().address, "");
        assert_eq!(s.recipients().len(), 3);
        assert!(s.recipients()[0].is_local && !s.recipients()[1].is_local);
        assert_eq!(s.tls().as_ref().unwrap().protocol, "TLSv1.3");
        let a = address("\"a@b\"@c.example")
            .param("size", Some("10"))
            .build();
        assert_eq!(
            (a.local_part.as_str(), a.domain.as_str()),
            ("\"a@b\"", "c.example")
        );
        assert_eq!(a.params[0].keyword, "SIZE");
        let p = address("postmaster").build();
        assert_eq!(
            (p.local_part.as_str(), p.domain.as_str()),
            ("postmaster", "")
        );
    }

    #[test]
    fn summaries() {
        assert_eq!(summary(&crate::pass()).0, "pass");
        assert_eq!(
            summary(&crate::reject(554, "5.7.1", "no")),
            ("reject", 554, "5.7.1".into(), "no".into())
        );
        assert_eq!(summary(&crate::defer(451, "", "later")).2, "");
    }

    #[test]
    fn fake_kv_follows_the_clock() {
        use crate::host::kv;
        let h = host();
        kv::set("a", "1", Some(1_000)).unwrap();
        kv::set("forever", "x", None).unwrap();
        assert_eq!(h.kv_ttl_ms("a"), Some(1_000));
        h.advance_ms(999);
        assert_eq!(kv::get("a").unwrap().as_deref(), Some("1"));
        assert!(!kv::set_if_absent("a", "2", None).unwrap());
        h.advance_ms(1);
        assert_eq!(kv::get("a").unwrap(), None);
        assert!(kv::set_if_absent("a", "2", None).unwrap());
        assert_eq!(h.kv_keys(), ["a", "forever"]);
        assert!(kv::delete("a").unwrap() && !kv::delete("a").unwrap());
        // A fixed window from the first increment.
        assert_eq!(kv::increment("n", 2, 500).unwrap(), 2);
        h.advance_ms(400);
        assert_eq!(kv::increment("n", 3, 500).unwrap(), 5);
        assert_eq!(h.kv_ttl_ms("n"), Some(100));
        h.advance_ms(100);
        assert_eq!(kv::increment("n", 1, 500).unwrap(), 1);
        h.kv_put("word", "abc", None);
        assert_eq!(kv::increment("word", 1, 10).unwrap(), 1);
        assert!(matches!(kv::get(""), Err(crate::KvError::Invalid(_))));
    }

    #[test]
    fn fake_kv_failures_and_grant() {
        use crate::host::kv;
        let h = host();
        h.fail_kv(Some(crate::KvError::Unavailable("down".into())));
        assert!(matches!(kv::get("a"), Err(crate::KvError::Unavailable(m)) if m == "down"));
        h.fail_kv(None);
        h.grant_kv(false);
        assert!(matches!(
            kv::increment("a", 1, 1),
            Err(crate::KvError::Denied)
        ));
        h.reset();
        assert_eq!(kv::get("a").unwrap(), None);
        assert_eq!(h.now_ms(), START_MS);
    }

    #[test]
    fn fake_dns_answers_as_scripted() {
        use crate::DnsError;
        use crate::host::dns;
        let h = host();
        h.dns_a("Mail.Example.TEST.", &["192.0.2.1", "192.0.2.2"]);
        h.dns_mx(
            "example.test",
            &[(20, "b.example.test"), (10, "a.example.test")],
        );
        h.dns_error(
            RecordType::Txt,
            "example.test",
            DnsError::Temporary("servfail".into()),
        );
        assert_eq!(dns::lookup_a("mail.example.test").unwrap().len(), 2);
        let mx = dns::lookup_mx("example.test").unwrap();
        assert_eq!(
            (mx[0].preference, mx[0].exchange.as_str()),
            (10, "a.example.test")
        );
        assert!(matches!(
            dns::lookup_txt("example.test"),
            Err(DnsError::Temporary(_))
        ));
        assert!(matches!(
            dns::lookup_aaaa("mail.example.test"),
            Err(DnsError::NoRecords)
        ));
        assert!(matches!(
            dns::lookup_a("nowhere.test"),
            Err(DnsError::NxDomain)
        ));
        assert_eq!(h.dns_queries().len(), 5);
        assert_eq!(
            h.dns_queries()[4],
            (RecordType::A, "nowhere.test".to_string())
        );
        h.grant_dns(false);
        assert!(matches!(
            dns::lookup_a("mail.example.test"),
            Err(DnsError::Denied)
        ));
    }

    #[test]
    fn fake_log_and_clock() {
        use crate::host::{log, now_ms};
        let h = host();
        log::with(crate::Level::Warn, "over limit", &[("client", "192.0.2.1")]);
        log::info("fine");
        let logs = h.logs();
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[0].field("client"), Some("192.0.2.1"));
        assert!(h.logged("over") && !h.logged("absent"));
        h.set_now_ms(42);
        assert_eq!(now_ms(), 42);
    }
}
