//! The in-memory index of the log: where every queued message and its state records
//! lie (segment, offset, length — never their bytes), which removed messages still
//! need their tombstone, and how many live bytes each segment holds, which decides
//! when a segment can be deleted or is worth compacting. Trusts its callers: recovery
//! hands it verified records, the committer only records that became durable.
//!
//! Ordering is by log sequence number (LSN), never by position, because compaction
//! copies records (keeping their LSN) into newer segments. A message is live when its
//! newest message record is newer than its newest tombstone; its state records are
//! those newer than its message record. A tombstone is needed while some other
//! segment still holds an older message record of its id ("pins" it); otherwise
//! deleting that segment would bring the message back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::format::Kind;
use crate::id::QueueId;
use crate::segment::SegFile;

/// Where a record lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub seg: u64,
    /// Offset of the record header in the segment.
    pub offset: u64,
    /// Length of the whole record.
    pub len: u64,
}

/// A queued message.
#[derive(Clone, Debug)]
pub(crate) struct MsgEntry {
    pub lsn: u64,
    pub loc: Loc,
    pub envelope_len: u32,
    pub message_len: u64,
    pub body_crc: u32,
    /// Its state records, oldest first.
    pub states: Vec<(u64, Loc)>,
    /// Other segments that still hold an older copy of its message record.
    pub stale: Vec<u64>,
}

/// A removed message whose tombstone must be kept while `pins` exist.
#[derive(Clone, Debug)]
pub(crate) struct Removed {
    pub lsn: u64,
    pub tomb: Loc,
    pub pins: Vec<u64>,
}

/// Bookkeeping of one segment.
#[derive(Debug)]
pub(crate) struct SegInfo {
    pub file: Arc<SegFile>,
    /// Bytes in the file that belong to the log.
    pub size: u64,
    /// Bytes of records still needed (live messages and states, needed tombstones).
    pub live: u64,
    /// When it stopped being the active segment (`None`: it is the active one).
    pub sealed_at: Option<SystemTime>,
    /// Ids that placed a record here (may repeat or be dead; filtered when used).
    pub ids: Vec<QueueId>,
    /// Ids with an older message record here (a stale copy or a removed message).
    pub refs: Vec<QueueId>,
    /// A record here could not be read back; compaction leaves it to recovery.
    pub damaged: bool,
}

/// One record found by recovery.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found {
    pub kind: Kind,
    pub id: QueueId,
    pub lsn: u64,
    pub loc: Loc,
    pub envelope_len: u32,
    pub payload_len: u64,
    pub body_crc: u32,
}

/// What [`Index::build`] found.
#[derive(Debug, Default)]
pub(crate) struct BuildSummary {
    pub messages: usize,
    pub states: usize,
    pub orphan_states: usize,
    pub tombstones_kept: usize,
    pub max_lsn: u64,
}

/// A live record of a segment being compacted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LiveRecord {
    pub kind: Kind,
    pub id: QueueId,
    pub lsn: u64,
    pub loc: Loc,
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    pub messages: BTreeMap<QueueId, MsgEntry>,
    pub removed: HashMap<QueueId, Removed>,
    pub segments: BTreeMap<u64, SegInfo>,
    /// Commits written but not yet durable (so a second commit of the id is refused).
    pub pending: HashSet<QueueId>,
    /// Removes written but not yet durable.
    pub removing: HashSet<QueueId>,
    /// Sum of the record lengths of queued messages.
    pub bytes: u64,
}

impl Index {
    pub fn add_segment(&mut self, file: Arc<SegFile>, size: u64, sealed_at: Option<SystemTime>) {
        self.segments.insert(
            file.seq,
            SegInfo {
                file,
                size,
                live: 0,
                sealed_at,
                ids: Vec::new(),
                refs: Vec::new(),
                damaged: false,
            },
        );
    }

    /// `seq` stopped being the active segment.
    pub fn seal(&mut self, seq: u64) {
        if let Some(s) = self.segments.get_mut(&seq) {
            s.sealed_at.get_or_insert_with(SystemTime::now);
        }
    }

    pub fn file(&self, seq: u64) -> Option<Arc<SegFile>> {
        self.segments.get(&seq).map(|s| Arc::clone(&s.file))
    }

    fn live(&mut self, seq: u64, delta: i64, id: Option<QueueId>) {
        if let Some(s) = self.segments.get_mut(&seq) {
            s.live = s.live.saturating_add_signed(delta);
            if let Some(id) = id {
                s.ids.push(id);
            }
        }
    }

    fn add_ref(&mut self, seq: u64, id: QueueId) {
        if let Some(s) = self.segments.get_mut(&seq) {
            s.refs.push(id);
        }
    }

    /// Bytes were appended to segment `seq` (live or not).
    pub fn grew(&mut self, seq: u64, end: u64) {
        if let Some(s) = self.segments.get_mut(&seq) {
            s.size = s.size.max(end);
        }
    }

    /// A message record became durable.
    pub fn commit(&mut self, id: QueueId, entry: MsgEntry) {
        self.pending.remove(&id);
        self.live(entry.loc.seg, entry.loc.len as i64, Some(id));
        self.bytes += entry.loc.len;
        let mut entry = entry;
        if let Some(old) = self.removed.remove(&id) {
            // A reused id: the old incarnation's records are now merely older copies.
            self.live(old.tomb.seg, -(old.tomb.len as i64), None);
            entry.stale = old.pins;
        }
        if let Some(previous) = self.messages.insert(id, entry) {
            // Cannot happen (commits of a queued id are refused); keep counts true.
            self.drop_entry(&previous);
        }
    }

    fn drop_entry(&mut self, entry: &MsgEntry) {
        self.live(entry.loc.seg, -(entry.loc.len as i64), None);
        self.bytes = self.bytes.saturating_sub(entry.loc.len);
        for (_, loc) in &entry.states {
            self.live(loc.seg, -(loc.len as i64), None);
        }
    }

    /// A state record became durable; false if its message is gone.
    pub fn add_state(&mut self, id: QueueId, lsn: u64, loc: Loc) -> bool {
        let Some(entry) = self.messages.get_mut(&id) else {
            return false;
        };
        if lsn <= entry.lsn {
            return false;
        }
        match entry.states.binary_search_by_key(&lsn, |(l, _)| *l) {
            Ok(_) => return false,
            Err(at) => entry.states.insert(at, (lsn, loc)),
        }
        self.live(loc.seg, loc.len as i64, Some(id));
        true
    }

    /// A tombstone became durable; the removed message's record length, if it was queued.
    pub fn remove(&mut self, id: QueueId, lsn: u64, tomb: Loc) -> Option<u64> {
        self.removing.remove(&id);
        let entry = self.messages.remove(&id)?;
        self.drop_entry(&entry);
        let mut pins = entry.stale.clone();
        if entry.loc.seg != tomb.seg {
            self.add_ref(entry.loc.seg, id);
            pins.push(entry.loc.seg);
        }
        pins.retain(|&s| s != tomb.seg);
        pins.sort_unstable();
        pins.dedup();
        if !pins.is_empty() {
            self.live(tomb.seg, tomb.len as i64, Some(id));
            self.removed.insert(id, Removed { lsn, tomb, pins });
        }
        Some(entry.loc.len)
    }

    /// Whether the record of `kind` for `id` with `lsn` is still the one at
    /// `from` (what [`Index::moved`] requires of a compaction copy).
    pub fn is_current(&self, kind: Kind, id: QueueId, lsn: u64, from: Loc) -> bool {
        match kind {
            Kind::Message => self
                .messages
                .get(&id)
                .is_some_and(|e| e.lsn == lsn && e.loc == from),
            Kind::State => self
                .messages
                .get(&id)
                .is_some_and(|e| e.states.iter().any(|(l, loc)| *l == lsn && *loc == from)),
            Kind::Tombstone => self
                .removed
                .get(&id)
                .is_some_and(|r| r.lsn == lsn && r.tomb == from),
        }
    }

    /// Compaction copied the record at `from` to `to` (same LSN) and the copy is
    /// durable. Whether the copy is the live one now.
    pub fn moved(&mut self, kind: Kind, id: QueueId, lsn: u64, from: Loc, to: Loc) -> bool {
        let moved = match kind {
            Kind::Message => match self.messages.get_mut(&id) {
                Some(e) if e.lsn == lsn && e.loc == from => {
                    e.loc = to;
                    e.stale.push(from.seg);
                    true
                }
                _ => false,
            },
            Kind::State => match self.messages.get_mut(&id) {
                Some(e) => match e
                    .states
                    .iter_mut()
                    .find(|(l, loc)| *l == lsn && *loc == from)
                {
                    Some(slot) => {
                        slot.1 = to;
                        true
                    }
                    None => false,
                },
                None => false,
            },
            Kind::Tombstone => match self.removed.get_mut(&id) {
                Some(r) if r.lsn == lsn && r.tomb == from => {
                    r.tomb = to;
                    r.pins.retain(|&s| s != to.seg);
                    true
                }
                _ => false,
            },
        };
        if moved {
            self.live(from.seg, -(from.len as i64), None);
            self.live(to.seg, to.len as i64, Some(id));
            if kind == Kind::Message {
                self.add_ref(from.seg, id);
            }
            if kind == Kind::Tombstone
                && let Some(r) = self.removed.get(&id)
                && r.pins.is_empty()
            {
                self.removed.remove(&id);
                self.live(to.seg, -(to.len as i64), None);
            }
        }
        moved
    }

    /// Sealed segments without a live record: taken out of the index, to be deleted.
    /// Call [`Index::released`] once their deletion is durable.
    pub fn take_deletable(&mut self) -> Vec<SegInfo> {
        let dead: Vec<u64> = self
            .segments
            .iter()
            .filter(|(_, s)| s.sealed_at.is_some() && s.live == 0)
            .map(|(seq, _)| *seq)
            .collect();
        dead.iter()
            .filter_map(|seq| self.segments.remove(seq))
            .collect()
    }

    /// Segments are durably gone: older copies there no longer pin anything.
    pub fn released(&mut self, gone: &[(u64, Vec<QueueId>)]) {
        for (seq, refs) in gone {
            for id in refs {
                if let Some(e) = self.messages.get_mut(id) {
                    e.stale.retain(|s| s != seq);
                }
                let unpinned = match self.removed.get_mut(id) {
                    Some(r) => {
                        r.pins.retain(|s| s != seq);
                        r.pins.is_empty().then_some(r.tomb)
                    }
                    None => None,
                };
                if let Some(tomb) = unpinned {
                    self.removed.remove(id);
                    self.live(tomb.seg, -(tomb.len as i64), None);
                }
            }
        }
    }

    /// The sealed segment most worth compacting: older than `min_age`, live bytes
    /// under `ratio` of its size (fewest live bytes first).
    pub fn compaction_candidate(&self, min_age: Duration, ratio: f64) -> Option<u64> {
        let now = SystemTime::now();
        self.segments
            .iter()
            .filter(|(_, s)| !s.damaged && s.live > 0)
            .filter(|(_, s)| {
                s.sealed_at
                    .is_some_and(|at| now.duration_since(at).unwrap_or_default() >= min_age)
            })
            .filter(|(_, s)| (s.live as f64) < ratio * s.size as f64)
            .min_by_key(|(_, s)| s.live)
            .map(|(seq, _)| *seq)
    }

    /// Every live record of segment `seq`, in log order.
    pub fn live_records(&self, seq: u64) -> Vec<LiveRecord> {
        let Some(seg) = self.segments.get(&seq) else {
            return Vec::new();
        };
        let mut ids = seg.ids.clone();
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::new();
        for id in ids {
            if let Some(e) = self.messages.get(&id) {
                if e.loc.seg == seq {
                    out.push(LiveRecord {
                        kind: Kind::Message,
                        id,
                        lsn: e.lsn,
                        loc: e.loc,
                    });
                }
                out.extend(
                    e.states
                        .iter()
                        .filter(|(_, loc)| loc.seg == seq)
                        .map(|&(lsn, loc)| LiveRecord {
                            kind: Kind::State,
                            id,
                            lsn,
                            loc,
                        }),
                );
            }
            if let Some(r) = self.removed.get(&id)
                && r.tomb.seg == seq
            {
                out.push(LiveRecord {
                    kind: Kind::Tombstone,
                    id,
                    lsn: r.lsn,
                    loc: r.tomb,
                });
            }
        }
        out.sort_by_key(|r| r.loc.offset);
        out
    }

    /// Rebuild the index from every record recovery found (any order).
    pub fn build(&mut self, mut found: Vec<Found>) -> BuildSummary {
        let mut summary = BuildSummary {
            max_lsn: found.iter().map(|f| f.lsn).max().unwrap_or(0),
            ..BuildSummary::default()
        };
        found.sort_unstable_by_key(|f| (f.id, f.lsn, f.loc.seg));
        for group in found.chunk_by(|a, b| a.id == b.id) {
            self.build_one(group, &mut summary);
        }
        summary
    }

    fn build_one(&mut self, group: &[Found], summary: &mut BuildSummary) {
        let id = group[0].id;
        // Sorted by (lsn, seg): the last of a kind is the newest, its newest copy.
        let newest = |kind: Kind| group.iter().rev().find(|f| f.kind == kind).copied();
        let message = newest(Kind::Message);
        let tomb = newest(Kind::Tombstone);
        let message_segs = |below: u64, except: u64| {
            let mut segs: Vec<u64> = group
                .iter()
                .filter(|f| f.kind == Kind::Message && f.lsn <= below && f.loc.seg != except)
                .map(|f| f.loc.seg)
                .collect();
            segs.sort_unstable();
            segs.dedup();
            segs
        };
        match (message, tomb) {
            (Some(m), t) if t.is_none_or(|t| t.lsn < m.lsn) => {
                let stale = message_segs(m.lsn, m.loc.seg);
                let mut states: Vec<(u64, Loc)> = Vec::new();
                for f in group
                    .iter()
                    .filter(|f| f.kind == Kind::State && f.lsn > m.lsn)
                {
                    match states.last_mut() {
                        // A duplicate (same LSN, older segment first): keep the newest copy.
                        Some(last) if last.0 == f.lsn => *last = (f.lsn, f.loc),
                        _ => states.push((f.lsn, f.loc)),
                    }
                }
                for &s in &stale {
                    self.add_ref(s, id);
                }
                for (_, loc) in &states {
                    self.live(loc.seg, loc.len as i64, Some(id));
                }
                summary.messages += 1;
                summary.states += states.len();
                summary.orphan_states += group
                    .iter()
                    .filter(|f| f.kind == Kind::State && f.lsn < m.lsn)
                    .count();
                self.live(m.loc.seg, m.loc.len as i64, Some(id));
                self.bytes += m.loc.len;
                self.messages.insert(
                    id,
                    MsgEntry {
                        lsn: m.lsn,
                        loc: m.loc,
                        envelope_len: m.envelope_len,
                        message_len: m.payload_len,
                        body_crc: m.body_crc,
                        states,
                        stale,
                    },
                );
            }
            (_, Some(t)) => {
                let pins = message_segs(t.lsn, t.loc.seg);
                for &s in &pins {
                    self.add_ref(s, id);
                }
                if !pins.is_empty() {
                    summary.tombstones_kept += 1;
                    self.live(t.loc.seg, t.loc.len as i64, Some(id));
                    self.removed.insert(
                        id,
                        Removed {
                            lsn: t.lsn,
                            tomb: t.loc,
                            pins,
                        },
                    );
                }
                summary.orphan_states += group.iter().filter(|f| f.kind == Kind::State).count();
            }
            _ => {
                summary.orphan_states += group.iter().filter(|f| f.kind == Kind::State).count();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> QueueId {
        format!("0000000000000000000{}", n as char).parse().unwrap()
    }

    fn loc(seg: u64, offset: u64) -> Loc {
        Loc {
            seg,
            offset,
            len: 100,
        }
    }

    fn index_with_segments(dir: &std::path::Path, seqs: &[u64]) -> Index {
        let mut index = Index::default();
        for &seq in seqs {
            let path = dir.join(format!("{seq}"));
            std::fs::write(&path, b"").unwrap();
            let file = Arc::new(SegFile::open(&path, seq).unwrap());
            index.add_segment(file, 1000, Some(SystemTime::UNIX_EPOCH));
        }
        index
    }

    fn found(kind: Kind, n: u8, lsn: u64, at: Loc) -> Found {
        Found {
            kind,
            id: id(n),
            lsn,
            loc: at,
            envelope_len: 2,
            payload_len: 10,
            body_crc: 0,
        }
    }

    fn entry(lsn: u64, at: Loc) -> MsgEntry {
        MsgEntry {
            lsn,
            loc: at,
            envelope_len: 2,
            message_len: 10,
            body_crc: 0,
            states: Vec::new(),
            stale: Vec::new(),
        }
    }

    #[test]
    fn build_resolves_by_lsn_not_position() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = index_with_segments(dir.path(), &[1, 2, 3]);
        let summary = index.build(vec![
            // A: message in 1, compacted copy in 3, states in 2 and 3 (one copied twice).
            found(Kind::Message, b'A', 1, loc(1, 32)),
            found(Kind::State, b'A', 4, loc(2, 32)),
            found(Kind::Message, b'A', 1, loc(3, 32)),
            found(Kind::State, b'A', 4, loc(3, 132)),
            found(Kind::State, b'A', 5, loc(2, 132)),
            // B: removed; its message in 1, tombstone in 2.
            found(Kind::Message, b'B', 2, loc(1, 132)),
            found(Kind::Tombstone, b'B', 6, loc(2, 232)),
            // C: message and tombstone in one segment: nothing to keep.
            found(Kind::Message, b'C', 3, loc(2, 332)),
            found(Kind::Tombstone, b'C', 7, loc(2, 432)),
            // D: state records of a message that is gone.
            found(Kind::State, b'D', 8, loc(3, 232)),
        ]);
        assert_eq!(summary.messages, 1);
        assert_eq!(summary.states, 2);
        assert_eq!(summary.orphan_states, 1);
        assert_eq!(summary.tombstones_kept, 1);
        assert_eq!(summary.max_lsn, 8);
        let a = &index.messages[&id(b'A')];
        assert_eq!(a.loc, loc(3, 32));
        assert_eq!(a.stale, vec![1]);
        assert_eq!(a.states, vec![(4, loc(3, 132)), (5, loc(2, 132))]);
        assert_eq!(index.removed[&id(b'B')].pins, vec![1]);
        assert!(!index.removed.contains_key(&id(b'C')));
        // 1: nothing live; 2: A's state 5 and B's tombstone; 3: A and its state 4.
        let live: Vec<u64> = index.segments.values().map(|s| s.live).collect();
        assert_eq!(live, vec![0, 200, 200]);
        assert_eq!(index.bytes, 100);

        // Deleting segment 1 unpins B's tombstone and drops A's stale copy.
        let gone = index.take_deletable();
        assert_eq!(gone.iter().map(|s| s.file.seq).collect::<Vec<_>>(), vec![1]);
        index.released(&[(1, gone[0].refs.clone())]);
        assert!(index.removed.is_empty());
        assert!(index.messages[&id(b'A')].stale.is_empty());
        assert_eq!(index.segments[&2].live, 100);
    }

    #[test]
    fn remove_pins_the_tombstone_until_the_message_segment_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = index_with_segments(dir.path(), &[1, 2]);
        index.commit(id(b'A'), entry(1, loc(1, 32)));
        assert!(index.add_state(id(b'A'), 2, loc(1, 132)));
        assert!(!index.add_state(id(b'A'), 2, loc(1, 232)), "duplicate lsn");
        assert!(!index.add_state(id(b'Z'), 3, loc(1, 232)), "unknown id");
        assert_eq!(index.segments[&1].live, 200);
        assert_eq!(index.remove(id(b'A'), 4, loc(2, 32)), Some(100));
        assert_eq!(index.remove(id(b'A'), 5, loc(2, 132)), None);
        assert_eq!(index.segments[&1].live, 0);
        assert_eq!(index.segments[&2].live, 100, "tombstone pinned by 1");
        assert_eq!(index.bytes, 0);
        // Compacting 2 moves the tombstone along.
        let live = index.live_records(2);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].kind, Kind::Tombstone);
    }

    #[test]
    fn compaction_moves_only_what_is_still_current() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = index_with_segments(dir.path(), &[1, 2]);
        index.commit(id(b'A'), entry(1, loc(1, 32)));
        index.commit(id(b'B'), entry(2, loc(1, 132)));
        assert!(index.add_state(id(b'A'), 3, loc(1, 232)));
        let live = index.live_records(1);
        assert_eq!(
            live.iter().map(|r| r.loc.offset).collect::<Vec<_>>(),
            vec![32, 132, 232]
        );
        // B is removed before its copy lands: the copy is dead on arrival.
        index.remove(id(b'B'), 4, loc(2, 32));
        assert!(index.moved(Kind::Message, id(b'A'), 1, loc(1, 32), loc(2, 132)));
        assert!(index.moved(Kind::State, id(b'A'), 3, loc(1, 232), loc(2, 232)));
        assert!(!index.moved(Kind::Message, id(b'B'), 2, loc(1, 132), loc(2, 332)));
        // 1 still holds B's removed record and A's stale copy: its deletion unpins.
        assert_eq!(index.segments[&1].live, 0);
        let gone = index.take_deletable();
        assert_eq!(gone.len(), 1);
        index.released(&[(1, gone[0].refs.clone())]);
        assert!(index.removed.is_empty());
        assert_eq!(index.segments[&2].live, 200);
        assert!(index.messages[&id(b'A')].stale.is_empty());
    }

    #[test]
    fn compaction_candidates_respect_age_and_ratio() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = index_with_segments(dir.path(), &[1, 2, 3]);
        index.commit(id(b'A'), entry(1, loc(1, 32)));
        index.commit(id(b'B'), entry(2, loc(2, 32)));
        index.commit(id(b'C'), entry(3, loc(2, 132)));
        index.commit(id(b'D'), entry(4, loc(2, 232)));
        assert_eq!(
            index.compaction_candidate(Duration::ZERO, 0.25),
            Some(1),
            "100 of 1000 live"
        );
        assert_eq!(index.compaction_candidate(Duration::ZERO, 0.05), None);
        assert_eq!(
            index.compaction_candidate(Duration::from_secs(1 << 40), 0.25),
            None
        );
        index.segments.get_mut(&1).unwrap().sealed_at = None; // the active one
        assert_eq!(index.compaction_candidate(Duration::ZERO, 0.5), Some(2));
    }
}
