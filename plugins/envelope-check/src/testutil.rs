//! Test helpers: envelope addresses, verdict inspection and a fake resolver.

use std::cell::{Cell, RefCell};

use postern_sdk::{DnsError, EnvelopeAddress, Level, Mx, Verdict, testing};

use crate::sender::Resolver;

pub fn addr(address: &str, is_local: bool) -> EnvelopeAddress {
    testing::address(address).local(is_local).build()
}

pub fn is_pass(v: &Verdict) -> bool {
    matches!(v, Verdict::Pass)
}

/// (code, enhanced, text) of a refusing verdict.
pub fn reply_of(v: &Verdict) -> Option<(u16, &str, &str)> {
    match v {
        Verdict::Reject(r) | Verdict::Defer(r) | Verdict::Disconnect(r) => {
            Some((r.code, r.enhanced.as_deref().unwrap_or(""), r.text.as_str()))
        }
        _ => None,
    }
}

pub struct FakeDns {
    mx: Result<Vec<Mx>, DnsError>,
    a: Result<Vec<String>, DnsError>,
    aaaa: Result<Vec<String>, DnsError>,
    queries: Cell<usize>,
    logs: RefCell<Vec<String>>,
}

impl FakeDns {
    pub fn new(
        mx: Result<Vec<Mx>, DnsError>,
        a: Result<Vec<String>, DnsError>,
        aaaa: Result<Vec<String>, DnsError>,
    ) -> FakeDns {
        FakeDns {
            mx,
            a,
            aaaa,
            queries: Cell::new(0),
            logs: RefCell::new(Vec::new()),
        }
    }
    pub fn queries(&self) -> usize {
        self.queries.get()
    }
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.borrow().iter().any(|l| l.contains(needle))
    }
    fn count(&self) {
        self.queries.set(self.queries.get() + 1);
    }
}

impl Resolver for FakeDns {
    fn mx(&self, _name: &str) -> Result<Vec<Mx>, DnsError> {
        self.count();
        self.mx.clone()
    }
    fn a(&self, _name: &str) -> Result<Vec<String>, DnsError> {
        self.count();
        self.a.clone()
    }
    fn aaaa(&self, _name: &str) -> Result<Vec<String>, DnsError> {
        self.count();
        self.aaaa.clone()
    }
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        self.logs
            .borrow_mut()
            .push(format!("{level:?} {message} {fields:?}"));
    }
}
