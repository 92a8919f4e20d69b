//! RFC 7208 §4.6.4's void-look-up limit for mail-auth's SPF evaluation,
//! which enforces the 10-term limit but not this one. mail-auth asks a
//! caller-supplied cache before each DNS query and fills it after each
//! answer; [`Queries`] lends it caches that never answer, so every query
//! goes to the resolver (whose own cache stays in front of the network),
//! and records which queries came back with records. A query that never
//! got an answer into the cache failed (no such name, no records, or a
//! temporary error, which makes the result `temperror` anyway); one that
//! got an empty set found nothing. Either is a void look-up.
//!
//! Known gap: mail-auth resolves `exists` without filling the cache, so an
//! `exists` that finds nothing cannot be told from one that matched; it is
//! left out of the count (pyspf counts it). Input: the order of mail-auth's
//! calls, which is sequential within one evaluation.

use std::borrow::Borrow;
use std::hash::Hash;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use mail_auth::{MX, RecordSet, ResolverCache, SpfOutput, SpfResult, Txt};

/// More void look-ups than this make the evaluation a permerror.
pub const MAX_VOID_LOOKUPS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Txt,
    Mx,
    A,
    Aaaa,
    Ptr,
}

#[derive(Debug)]
struct Query {
    kind: Kind,
    /// None: no answer reached the cache; Some(false): an empty set.
    found: Option<bool>,
}

/// The DNS queries of one SPF evaluation, in order.
#[derive(Debug, Default)]
pub struct Queries(Mutex<Vec<Query>>);

impl Queries {
    fn asked(&self, kind: Kind) {
        self.0.lock().unwrap().push(Query { kind, found: None });
    }

    fn answered(&self, kind: Kind, found: bool) {
        let mut q = self.0.lock().unwrap();
        if let Some(last) = q.iter_mut().rev().find(|q| q.kind == kind)
            && last.found.is_none()
        {
            last.found = Some(found);
        }
    }

    /// Void look-ups so far. TXT look-ups (the record itself, `include`,
    /// `redirect`, `exp`) are not counted: a missing record is already
    /// `none` or `permerror`. An A query followed at once by an AAAA query,
    /// neither answered into the cache, is an `exists` (see the module
    /// note): mail-auth's `a`, `mx` and `ptr` ask one family only.
    pub fn voids(&self) -> usize {
        let q = self.0.lock().unwrap();
        let mut voids = 0;
        let mut i = 0;
        while i < q.len() {
            let this = &q[i];
            let exists = this.kind == Kind::A
                && this.found.is_none()
                && q.get(i + 1)
                    .is_some_and(|n| n.kind == Kind::Aaaa && n.found.is_none());
            if exists {
                i += 2;
                continue;
            }
            if this.kind != Kind::Txt && this.found != Some(true) {
                voids += 1;
            }
            i += 1;
        }
        voids
    }

    /// The caches to hand to mail-auth's `Parameters`.
    pub fn watches(&self) -> Watches<'_> {
        Watches {
            txt: Watch::new(self, Kind::Txt),
            mx: Watch::new(self, Kind::Mx),
            a: Watch::new(self, Kind::A),
            aaaa: Watch::new(self, Kind::Aaaa),
            ptr: Watch::new(self, Kind::Ptr),
        }
    }

    /// `out`, or `permerror` when the evaluation made more than
    /// [`MAX_VOID_LOOKUPS`] void look-ups. A `temperror` stays: a time-out
    /// also leaves a query unanswered, and trying again is the safer
    /// reading. The limit stops an evaluation at the third void look-up,
    /// so whatever it found after that is overruled.
    pub fn limit(&self, out: SpfOutput) -> SpfOutput {
        let voids = self.voids();
        if voids > MAX_VOID_LOOKUPS && out.result() != SpfResult::TempError {
            tracing::debug!(
                domain = out.domain(),
                voids,
                "SPF: more than {MAX_VOID_LOOKUPS} void look-ups, permerror"
            );
            out.with_result(SpfResult::PermError)
        } else {
            out
        }
    }
}

pub struct Watches<'q> {
    pub txt: Watch<'q, Txt>,
    pub mx: Watch<'q, RecordSet<MX>>,
    pub a: Watch<'q, RecordSet<Ipv4Addr>>,
    pub aaaa: Watch<'q, RecordSet<Ipv6Addr>>,
    pub ptr: Watch<'q, RecordSet<Box<str>>>,
}

/// A cache that never answers and notes what mail-auth asked and found.
pub struct Watch<'q, V> {
    queries: &'q Queries,
    kind: Kind,
    _value: PhantomData<fn() -> V>,
}

impl<'q, V> Watch<'q, V> {
    fn new(queries: &'q Queries, kind: Kind) -> Self {
        Watch {
            queries,
            kind,
            _value: PhantomData,
        }
    }
}

/// Whether an answer holds records.
pub trait Found {
    fn found(&self) -> bool;
}

impl Found for Txt {
    fn found(&self) -> bool {
        !matches!(self, Txt::Error(_))
    }
}

impl<T> Found for RecordSet<T> {
    fn found(&self) -> bool {
        !self.rrset.is_empty()
    }
}

/// One implementation for every key (names, and addresses for PTR): the
/// key is never looked at.
impl<K, V: Found> ResolverCache<K, V> for Watch<'_, V> {
    fn get<Q>(&self, _: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.queries.asked(self.kind);
        None
    }

    fn remove<Q>(&self, _: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, _: K, value: V, _: std::time::Instant) {
        self.queries.answered(self.kind, value.found());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(steps: &[(Kind, Option<bool>)]) -> usize {
        let q = Queries::default();
        for (kind, found) in steps {
            q.asked(*kind);
            if let Some(f) = found {
                q.answered(*kind, *f);
            }
        }
        q.voids()
    }

    #[test]
    fn counts_unanswered_and_empty_lookups() {
        use Kind::*;
        assert_eq!(run(&[(Txt, Some(true)), (A, Some(true))]), 0);
        assert_eq!(run(&[(Txt, Some(true)), (A, None), (Mx, Some(false))]), 2);
        // A missing include target is not counted (it is a permerror).
        assert_eq!(run(&[(Txt, None), (Txt, None)]), 0);
        // mx with two exchanges, one without addresses.
        assert_eq!(run(&[(Mx, Some(true)), (A, Some(true)), (A, None)]), 1);
        assert_eq!(run(&[(Ptr, None), (Aaaa, None), (Aaaa, None)]), 3);
    }

    #[test]
    fn an_exists_pair_is_not_counted() {
        use Kind::*;
        // exists (A then AAAA, neither cached), then a void `a`.
        assert_eq!(
            run(&[(Txt, Some(true)), (A, None), (Aaaa, None), (A, None)]),
            1
        );
        // A void `a` (IPv4 client) followed by an answered AAAA is not a pair.
        assert_eq!(run(&[(A, None), (Aaaa, Some(true))]), 1);
    }

    #[test]
    fn more_than_two_voids_is_a_permerror_but_temperror_stays() {
        let q = Queries::default();
        for _ in 0..3 {
            q.asked(Kind::A);
        }
        let out = q.limit(SpfOutput::new("example.org".into()).with_result(SpfResult::Fail));
        assert_eq!(out.result(), SpfResult::PermError);
        let out = q.limit(SpfOutput::new("example.org".into()).with_result(SpfResult::TempError));
        assert_eq!(out.result(), SpfResult::TempError);
        let two = Queries::default();
        two.asked(Kind::Mx);
        two.asked(Kind::Ptr);
        let out = two.limit(SpfOutput::new("example.org".into()).with_result(SpfResult::Pass));
        assert_eq!(out.result(), SpfResult::Pass);
    }
}
