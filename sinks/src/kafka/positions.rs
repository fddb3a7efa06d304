//! The delivered position of each file under exactly-once delivery.
//!
//! Every transaction of the sink also writes, to a compacted topic, one record per file
//! ("stream") it carried events of: the key names the sink's `transactional.id`, the source
//! and the file identity (the `fid` header: device, inode and a fingerprint); the value is the
//! file's path and the end offset of its last event in the transaction. Kafka commits both or
//! neither. After a restart the sink reads those positions (`read_committed`) before it
//! delivers anything, and skips every event that ends at or before its file's position: the
//! events a crash left in the channel, or that a source read again from an older checkpoint,
//! although Kafka already holds them.
//!
//! A file with no event for `tombstone_after` gets a tombstone, so that the topic keeps only
//! the files that are still read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_channels::{END_HEADER, Event, Origin, REWRITES_HEADER};

/// A file's delivered position, as the positions topic holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The file's path when it was last read (for people reading the topic).
    pub path: String,
    /// The offset just past the last delivered event of the file.
    pub end: u64,
    /// The file's `rewrites` header then (how often the source saw it truncated): a file
    /// truncated since starts again from 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rewrites: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

struct Stream {
    key: Box<str>,
    path: String,
    /// How far its lines are delivered or admitted: the committed position found at
    /// recovery, then the end of the last event admitted. An event that ends at or before it
    /// is a repeat (the channel's replay after a crash, then the source reading again from
    /// its older checkpoint) and is skipped.
    delivered: u64,
    /// The `rewrites` header of its events: a new value means the file was truncated or
    /// rewritten, and its offsets start again.
    rewrites: u32,
    /// Repeats skipped in a row, to say so when they start and end.
    skipped: u64,
    /// Events of it were admitted since the last commit.
    touched: bool,
    /// When it last had an event in a committed transaction (or was recovered).
    seen: Instant,
}

/// The streams of one sink: what was recovered, what the open transaction carries.
pub struct Streams {
    prefix: String,
    streams: Vec<Stream>,
    index: HashMap<Box<str>, usize>,
    /// The origin of the last event looked up, and its stream.
    cached: Option<(Arc<Origin>, usize)>,
    tombstone_after: Duration,
}

/// The offset just past the last byte of `ev` in its file: the `offset_end` header when a
/// processing stage set one, otherwise its offset plus its length.
pub fn event_end(ev: &Event) -> u64 {
    if !ev.headers.is_empty()
        && let Some(end) = ev.header(END_HEADER).and_then(|v| v.parse().ok())
    {
        return end;
    }
    ev.offset + ev.body.len() as u64
}

impl Streams {
    /// No streams yet, for the sink with `transactional_id`.
    pub fn new(transactional_id: &str, tombstone_after: Duration) -> Self {
        Streams {
            prefix: format!("{transactional_id}\t"),
            streams: Vec::new(),
            index: HashMap::new(),
            cached: None,
            tombstone_after,
        }
    }

    /// The prefix of every key this sink writes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key_of(&self, origin: &Origin) -> String {
        let id = origin.header("fid").unwrap_or(&origin.path);
        let mut key = String::with_capacity(self.prefix.len() + origin.source.len() + id.len() + 1);
        key.push_str(&self.prefix);
        key.push_str(&origin.source);
        key.push('\t');
        key.push_str(id);
        key
    }

    fn stream(&mut self, key: &str, path: &str) -> usize {
        if let Some(&i) = self.index.get(key) {
            return i;
        }
        let i = self.streams.len();
        self.streams.push(Stream {
            key: key.into(),
            path: path.to_owned(),
            delivered: 0,
            rewrites: 0,
            skipped: 0,
            touched: false,
            seen: Instant::now(),
        });
        self.index.insert(key.into(), i);
        i
    }

    /// Applies a record read back from the positions topic (`None`: a tombstone). Records of
    /// other sinks, and values that are not positions, are ignored.
    pub fn recover(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok(key) = std::str::from_utf8(key) else {
            return;
        };
        if !key.starts_with(&self.prefix) {
            return;
        }
        match value.map(serde_json::from_slice::<Position>) {
            Some(Ok(p)) => {
                let i = self.stream(key, &p.path);
                let s = &mut self.streams[i];
                s.delivered = p.end;
                s.rewrites = p.rewrites;
                s.path = p.path;
            }
            Some(Err(e)) => {
                tracing::warn!(key, error = %e, "unreadable position record; ignored");
            }
            None => {
                if let Some(i) = self.index.get(key).copied() {
                    self.remove(i);
                }
            }
        }
    }

    fn remove(&mut self, i: usize) {
        let s = self.streams.swap_remove(i);
        self.index.remove(&s.key);
        if let Some(moved) = self.streams.get(i) {
            self.index.insert(moved.key.clone(), i);
        }
        self.cached = None;
    }

    /// Whether `ev` is to be delivered: false when it ends at or before what its file's
    /// stream holds as delivered (the recovered position, or a line admitted before), since
    /// Kafka already holds it or will with the open transaction. A delivered event becomes its
    /// file's position in the open transaction.
    pub fn admit(&mut self, ev: &Event) -> bool {
        let i = match &self.cached {
            Some((origin, i)) if Arc::ptr_eq(origin, &ev.origin) => *i,
            _ => {
                let key = self.key_of(&ev.origin);
                let i = self.stream(&key, &ev.origin.path);
                self.cached = Some((ev.origin.clone(), i));
                let rewrites = ev
                    .origin
                    .header(REWRITES_HEADER)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                let s = &mut self.streams[i];
                if s.rewrites != rewrites {
                    // Truncated or rewritten: new lines from offset 0.
                    s.rewrites = rewrites;
                    s.delivered = 0;
                }
                i
            }
        };
        let end = event_end(ev);
        let s = &mut self.streams[i];
        if end <= s.delivered {
            if s.skipped == 0 {
                tracing::info!(file = %ev.origin.path, offset = ev.offset, delivered = s.delivered,
                    "Kafka holds this file's lines up to `delivered` (exactly once): skipping them");
            }
            s.skipped += 1;
            return false;
        }
        if s.skipped > 0 {
            tracing::info!(file = %ev.origin.path, offset = ev.offset, skipped = s.skipped,
                "skipped lines Kafka already holds (exactly once); delivering from here");
            s.skipped = 0;
        }
        s.delivered = end;
        s.touched = true;
        true
    }

    /// The records the open transaction writes to the positions topic, as (key, value):
    /// the position of every stream it carried events of, and a tombstone (`None`) for every
    /// stream idle for `tombstone_after` at `now`, which is forgotten.
    pub fn records(&mut self, now: Instant) -> Vec<(Box<str>, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.streams.len() {
            let s = &mut self.streams[i];
            if s.touched {
                s.touched = false;
                s.seen = now;
                let p = Position {
                    path: s.path.clone(),
                    end: s.delivered,
                    rewrites: s.rewrites,
                };
                let value = serde_json::to_vec(&p).unwrap_or_default();
                out.push((s.key.clone(), Some(value)));
            } else if now.saturating_duration_since(s.seen) >= self.tombstone_after {
                out.push((s.key.clone(), None));
                self.remove(i);
                continue;
            }
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn origin(path: &str, fid: &str) -> Arc<Origin> {
        Arc::new(Origin {
            source: "r1".into(),
            path: path.into(),
            file: path.into(),
            host: "h".into(),
            headers: vec![("fid".into(), fid.into())],
        })
    }

    fn ev(o: &Arc<Origin>, offset: u64, body: &'static str) -> Event {
        Event::new(Bytes::from_static(body.as_bytes()), o.clone(), offset, 0)
    }

    fn pos(path: &str, end: u64) -> Vec<u8> {
        serde_json::to_vec(&Position {
            path: path.into(),
            end,
            rewrites: 0,
        })
        .unwrap()
    }

    #[test]
    fn events_at_or_before_the_recovered_position_are_skipped_then_none_is() {
        let mut s = Streams::new("tx", Duration::from_secs(60));
        s.recover(b"tx\tr1\t1:2:aa", Some(&pos("/a", 10)));
        s.recover(b"other\tr1\t1:2:aa", Some(&pos("/a", 99)));
        let a = origin("/a", "1:2:aa");
        assert!(!s.admit(&ev(&a, 0, "01234")), "ends at 5");
        assert!(!s.admit(&ev(&a, 5, "56789")), "ends at 10: delivered");
        assert!(s.admit(&ev(&a, 10, "x")), "ends at 11");
        assert!(
            !s.admit(&ev(&a, 0, "01234")),
            "a repeat after a new line: the source reading again from an older checkpoint"
        );
        assert!(!s.admit(&ev(&a, 10, "x")), "the last one again");
        assert!(s.admit(&ev(&a, 11, "yz")));
        let mut rewritten = (*a).clone();
        rewritten
            .headers
            .push((REWRITES_HEADER.to_owned(), "1".to_owned()));
        let rewritten = Arc::new(rewritten);
        assert!(
            s.admit(&ev(&rewritten, 0, "0")),
            "truncated under the same fid: its offsets start again"
        );
        assert!(
            !s.admit(&ev(&rewritten, 0, "0")),
            "and repeats are caught again"
        );
        let recs = s.records(Instant::now());
        let value = recs[0].1.as_deref().unwrap();
        assert!(
            String::from_utf8_lossy(value).contains("\"rewrites\":1"),
            "kept with the position"
        );
        let mut after = Streams::new("tx", Duration::from_secs(60));
        after.recover(recs[0].0.as_bytes(), Some(value));
        assert!(
            !after.admit(&ev(&rewritten, 0, "0")),
            "after a restart, the same rewrite: a repeat"
        );
        let mut before = Streams::new("tx", Duration::from_secs(60));
        before.recover(b"tx\tr1\t1:2:aa", Some(&pos("/a", 10)));
        assert!(
            before.admit(&ev(&rewritten, 0, "0")),
            "truncated since the position was committed: new lines"
        );
        let other = origin("/a", "1:3:bb");
        assert!(
            s.admit(&ev(&other, 0, "0")),
            "another file on the same path"
        );
    }

    #[test]
    fn a_transaction_writes_the_last_end_of_each_stream_and_tombstones_idle_ones() {
        let mut s = Streams::new("tx", Duration::from_secs(60));
        let t0 = Instant::now();
        s.recover(b"tx\tr1\told", Some(&pos("/old", 3)));
        let a = origin("/a", "A");
        let mut joined = ev(&a, 0, "ab");
        joined
            .headers
            .set(Arc::from(END_HEADER), "7".to_owned().into_boxed_str());
        assert!(s.admit(&joined));
        let recs = s.records(t0);
        assert_eq!(recs.len(), 1, "the recovered idle stream is not written");
        assert_eq!(&*recs[0].0, "tx\tr1\tA");
        assert_eq!(recs[0].1.as_deref(), Some(&pos("/a", 7)[..]), "offset_end");
        assert!(s.records(t0).is_empty(), "nothing new");
        let later = t0 + Duration::from_secs(3600);
        let mut recs = s.records(later);
        recs.sort();
        assert_eq!(
            recs,
            vec![("tx\tr1\tA".into(), None), ("tx\tr1\told".into(), None)]
        );
        assert!(s.records(later).is_empty(), "forgotten");
        s.recover(b"tx\tr1\tA", None);
        assert!(s.admit(&ev(&a, 0, "ab")), "a tombstoned stream starts anew");
    }

    /// Records of the positions topic: keys of this sink (some of them mutated), of another
    /// sink, or arbitrary bytes; values that are positions, mutated positions, arbitrary
    /// bytes, or tombstones.
    fn topic_record() -> impl Strategy<Value = (Vec<u8>, Option<Vec<u8>>)> {
        use sluice_channels::fuzzing::{JSON, hostile};
        const KEYS: &[&[u8]] = &[b"\"path\":", b"\"end\":", b"\"rewrites\":", b"\t", b"tx\t"];
        let key = prop_oneof![
            3 => ("(tx|other)", "r[12]", "[0-9:a-f]{1,4}")
                .prop_map(|(tx, source, fid)| format!("{tx}\t{source}\t{fid}").into_bytes()),
            1 => hostile(Just(b"tx\tr1\t1:2:aa".to_vec()), KEYS),
        ];
        let position = ("[a-z/]{0,6}", any::<u64>(), 0u32..3).prop_map(|(path, end, rewrites)| {
            serde_json::to_vec(&Position {
                path,
                end,
                rewrites,
            })
            .unwrap()
        });
        let value = proptest::option::weighted(0.8, hostile(position, &[JSON, KEYS].concat()));
        (key, value)
    }

    proptest! {
        /// Any records read back from the positions topic, in any order: no panic, and each
        /// stream of this sink holds the last valid position its key was given, unless a
        /// tombstone came after it: an event ending there is skipped, one ending past it
        /// delivered.
        #[test]
        fn hostile_position_records_recover_the_last_valid_position(
            records in proptest::collection::vec(topic_record(), 0..24),
        ) {
            let mut s = Streams::new("tx", Duration::from_secs(60));
            let mut model: HashMap<String, Position> = HashMap::new();
            for (key, value) in &records {
                s.recover(key, value.as_deref());
                let Some(key) = std::str::from_utf8(key).ok().filter(|k| k.starts_with("tx\t")) else {
                    continue;
                };
                match value.as_deref().map(serde_json::from_slice::<Position>) {
                    Some(Ok(p)) => {
                        model.insert(key.to_owned(), p);
                    }
                    Some(Err(_)) => {}
                    None => {
                        model.remove(key);
                    }
                }
            }
            for (key, p) in &model {
                let Some((source, fid)) = key["tx\t".len()..].split_once('\t') else {
                    continue;
                };
                let o = Arc::new(Origin {
                    source: source.into(),
                    path: "/p".into(),
                    file: "p".into(),
                    host: "h".into(),
                    headers: vec![
                        ("fid".into(), fid.into()),
                        (REWRITES_HEADER.into(), p.rewrites.to_string()),
                    ],
                });
                prop_assert!(!s.admit(&ev(&o, p.end, "")), "{}: skipped up to {}", key, p.end);
                if p.end < u64::MAX {
                    prop_assert!(s.admit(&ev(&o, p.end, "x")), "{}: delivered past {}", key, p.end);
                }
            }
        }
    }
}
