//! Queue ids: sortable, unique message names. Trusts the system clock only for
//! ordering across restarts; `FromStr` trusts no input (exactly 20 of `[0-9A-Z]`).
//!
//! An id is a 20-digit base-36 number, digits `0-9A-Z`, so lexicographic order equals
//! numeric order. Its value is `time_us * 36^9 + tail`: the leading 11 digits are the
//! unix time in microseconds (good until the year 6000), the last 9 a random tail
//! (about 46 bits) that keeps ids of concurrent processes apart. Within one process a
//! global high-water mark makes every new id strictly greater than the previous one,
//! even when the clock steps back (the id then counts up from the last one).

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::SpoolError;

/// Number of characters in a queue id.
pub const QUEUE_ID_LEN: usize = 20;
const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// 36^9: the size of the random tail.
const TAIL_SPACE: u128 = 101_559_956_668_416;
/// 36^20 - 1: the largest value 20 digits can hold.
const MAX_VALUE: u128 = 13_367_494_538_843_734_067_838_845_976_575;

/// The last id value handed out in this process.
static LAST: Mutex<u128> = Mutex::new(0);

/// Sortable unique queue id (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId([u8; QUEUE_ID_LEN]);

impl QueueId {
    /// A new id, strictly greater than every id generated before in this process.
    pub fn generate() -> QueueId {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        let tail = u128::from(rand::random::<u64>()) % TAIL_SPACE;
        let candidate = now_us
            .saturating_mul(TAIL_SPACE)
            .saturating_add(tail)
            .min(MAX_VALUE);
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let value = if candidate > *last {
            candidate
        } else {
            // The clock stood still or stepped back: count up from the last id.
            (*last + 1).min(MAX_VALUE)
        };
        *last = value;
        QueueId::from_value(value)
    }

    /// The id as text (always 20 ASCII characters).
    pub fn as_str(&self) -> &str {
        // Only ever built from DIGITS or validated ASCII, so this cannot fail; fall
        // back to a constant rather than panicking all the same.
        std::str::from_utf8(&self.0).unwrap_or("00000000000000000000")
    }

    /// The unix time in microseconds encoded in the leading digits.
    pub fn timestamp_us(&self) -> u128 {
        self.value() / TAIL_SPACE
    }

    fn from_value(mut value: u128) -> QueueId {
        let mut out = [b'0'; QUEUE_ID_LEN];
        for slot in out.iter_mut().rev() {
            *slot = DIGITS[(value % 36) as usize];
            value /= 36;
        }
        QueueId(out)
    }

    fn value(&self) -> u128 {
        self.0.iter().fold(0u128, |acc, &c| {
            acc * 36 + u128::from(digit_value(c).unwrap_or(0))
        })
    }
}

fn digit_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'Z' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A queue id is a string on the wire and on disk (the envelope's JSON);
/// reading one checks it like `FromStr`.
impl serde::Serialize for QueueId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for QueueId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for QueueId {
    type Err = SpoolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != QUEUE_ID_LEN || !bytes.iter().all(|&c| digit_value(c).is_some()) {
            return Err(SpoolError::BadId(s.chars().take(64).collect()));
        }
        let mut out = [0u8; QUEUE_ID_LEN];
        out.copy_from_slice(bytes);
        Ok(QueueId(out))
    }
}

impl AsRef<str> for QueueId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn constants_are_powers_of_36() {
        assert_eq!(TAIL_SPACE, 36u128.pow(9));
        assert_eq!(MAX_VALUE, 36u128.pow(20) - 1);
    }

    #[test]
    fn format_and_parse_round_trip() {
        let id = QueueId::generate();
        assert_eq!(id.as_str().len(), QUEUE_ID_LEN);
        assert!(id.as_str().bytes().all(|c| DIGITS.contains(&c)));
        assert_eq!(id.to_string().parse::<QueueId>().unwrap(), id);
        assert_eq!(
            QueueId::from_value(MAX_VALUE).as_str(),
            "ZZZZZZZZZZZZZZZZZZZZ"
        );
        assert_eq!(QueueId::from_value(0).as_str(), "00000000000000000000");
    }

    #[test]
    fn leading_digits_are_the_time() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros();
        let id = QueueId::generate();
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros();
        // The high-water mark may push an id a little past "now" under heavy use by
        // other tests, but never behind it.
        assert!(id.timestamp_us() >= before);
        assert!(id.timestamp_us() <= after + 1_000_000);
    }

    #[test]
    fn parse_rejects_bad_ids() {
        for bad in [
            "",
            "0123456789ABCDEFGHI",
            "0123456789ABCDEFGHIJK",
            "0123456789abcdefghij",
            "0123456789ABCDEFGHI-",
            "0123456789ABCDEFGHI\u{e9}",
            "../../../../etc/pass",
        ] {
            assert!(
                matches!(bad.parse::<QueueId>(), Err(SpoolError::BadId(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sorted_and_unique_over_100k() {
        let ids: Vec<QueueId> = (0..100_000).map(|_| QueueId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.windows(2).all(|w| w[0].as_str() < w[1].as_str()));
    }

    #[test]
    fn unique_across_threads() {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let ids: Vec<QueueId> = (0..25_000).map(|_| QueueId::generate()).collect();
                    assert!(ids.windows(2).all(|w| w[0] < w[1]));
                    ids
                })
            })
            .collect();
        let mut all = HashSet::new();
        for handle in handles {
            for id in handle.join().unwrap() {
                assert!(all.insert(id), "duplicate id {id}");
            }
        }
        assert_eq!(all.len(), 100_000);
    }

    #[test]
    fn monotonic_when_clock_steps_back() {
        // Pretend an id 1 ms in the future was handed out; the next ones sort after it.
        let future = QueueId::generate().value() + 1_000 * TAIL_SPACE;
        {
            let mut last = LAST.lock().unwrap();
            *last = (*last).max(future);
        }
        let a = QueueId::generate();
        let b = QueueId::generate();
        assert!(a.value() > future && b > a);
    }
}
