//! The record format of segment files.
//!
//! A record is framed as
//!
//! ```text
//! magic [FF 'S' 'L' 'R'] | crc32c u32 | payload length u32 | kind u8 | payload
//! ```
//!
//! all integers little-endian, the CRC32C covering the length, the kind and the payload. The
//! magic lets recovery find the next record after a damaged one; `0xFF` never occurs in UTF-8
//! text, so log lines rarely imitate it.
//!
//! Three kinds of payload exist:
//! - an *origin* record defines a segment-local id for an [`Origin`], written before the first
//!   event that uses it in that segment;
//! - an *events* record holds consecutive events of one put: a count, a base read time, then
//!   per event its origin id, file offset, read time (as a zigzag delta from the base) and body
//!   length as LEB128 varints, followed by the body;
//! - an *events with headers* record is the same, for a put in which some event has headers of
//!   its own: each event's body is followed by its header count and, per header, its name, a
//!   byte (1: set, 0: removed) and, when set, its value (strings are a varint length and UTF-8
//!   bytes). Puts without event headers keep the first, shorter form.

use std::ops::Range;
use std::sync::Arc;

use crate::event::{Event, Headers, Origin};

/// The bytes that start every record.
pub const MAGIC: [u8; 4] = [0xFF, b'S', b'L', b'R'];
/// The length of a record's framing before its payload.
pub const HEADER_LEN: usize = 13;
/// The largest payload a record may have; larger lengths are taken as damage.
pub const MAX_PAYLOAD: usize = 256 << 20;
/// The largest event body the file channel stores.
pub const MAX_BODY: usize = MAX_PAYLOAD - 64;
/// A record defining an origin.
pub const KIND_ORIGIN: u8 = 1;
/// A record holding events.
pub const KIND_EVENTS: u8 = 2;
/// A record holding events some of which have headers of their own.
pub const KIND_EVENTS_HEADERS: u8 = 3;
/// An upper bound of an event's encoding beyond its body and headers.
pub const EVENT_OVERHEAD: usize = 40;

/// True for the kinds of record that hold events.
pub fn holds_events(kind: u8) -> bool {
    kind == KIND_EVENTS || kind == KIND_EVENTS_HEADERS
}

/// An upper bound of the encoding of `e` in an events record.
pub fn event_bound(e: &Event) -> usize {
    if e.headers.is_empty() {
        e.body.len() + EVENT_OVERHEAD
    } else {
        e.body.len() + EVENT_OVERHEAD + e.headers.bytes() + 21 * e.headers.len()
    }
}

/// What [`parse`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole, verified record.
    Record {
        /// Its kind.
        kind: u8,
        /// Its payload.
        payload: &'a [u8],
        /// Its whole length, framing included.
        len: usize,
    },
    /// The buffer ends inside the record, which needs this many bytes in all.
    Incomplete(usize),
    /// No valid record starts here.
    Invalid,
}

/// Parses and verifies the record at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    if buf.len() < HEADER_LEN {
        let n = buf.len().min(MAGIC.len());
        if buf[..n] != MAGIC[..n] {
            return Parsed::Invalid;
        }
        return Parsed::Incomplete(HEADER_LEN);
    }
    if buf[..4] != MAGIC {
        return Parsed::Invalid;
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let len = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    let kind = buf[12];
    if len > MAX_PAYLOAD || !(kind == KIND_ORIGIN || holds_events(kind)) {
        return Parsed::Invalid;
    }
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Parsed::Incomplete(total);
    }
    if crc32c::crc32c(&buf[8..total]) != crc {
        return Parsed::Invalid;
    }
    Parsed::Record {
        kind,
        payload: &buf[HEADER_LEN..total],
        len: total,
    }
}

/// Starts a record of `kind` at the end of `buf`; returns where it starts, for [`finish`].
pub fn begin(buf: &mut Vec<u8>, kind: u8) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&[0; 8]);
    buf.push(kind);
    start
}

/// Fills in the length and checksum of the record started at `start`, which ends at the end
/// of `buf`.
pub fn finish(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start - HEADER_LEN) as u32;
    buf[start + 8..start + 12].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends `v` as an LEB128 varint.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads an LEB128 varint at `*pos`, advancing it; `None` if it is cut off or too long.
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Moves `*pos` past one event's encoded headers, checking only their framing.
fn skip_headers(buf: &[u8], pos: &mut usize) -> Option<()> {
    let count = get_varint(buf, pos)?;
    for _ in 0..count {
        skip_str(buf, pos)?;
        match *buf.get(*pos)? {
            1 => {
                *pos += 1;
                skip_str(buf, pos)?;
            }
            0 => *pos += 1,
            _ => return None,
        }
    }
    Some(())
}

fn skip_str(buf: &[u8], pos: &mut usize) -> Option<()> {
    let len = usize::try_from(get_varint(buf, pos)?).ok()?;
    *pos = pos.checked_add(len).filter(|&e| e <= buf.len())?;
    Some(())
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

fn get_str(buf: &[u8], pos: &mut usize) -> Option<String> {
    let len = usize::try_from(get_varint(buf, pos)?).ok()?;
    let end = pos.checked_add(len)?;
    let bytes = buf.get(*pos..end)?;
    *pos = end;
    String::from_utf8(bytes.to_vec()).ok()
}

/// An upper bound of the encoded size of `origin`'s record.
pub fn origin_record_bound(origin: &Origin) -> usize {
    let strings = [&origin.source, &origin.path, &origin.file, &origin.host];
    let fixed: usize = strings.iter().map(|s| s.len() + 10).sum();
    let headers: usize = origin
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len() + 20)
        .sum();
    HEADER_LEN + 20 + fixed + headers
}

/// Appends a record defining `origin` as segment-local `id`.
pub fn encode_origin(buf: &mut Vec<u8>, id: u32, origin: &Origin) {
    let start = begin(buf, KIND_ORIGIN);
    put_varint(buf, u64::from(id));
    for s in [&origin.source, &origin.path, &origin.file, &origin.host] {
        put_str(buf, s);
    }
    put_varint(buf, origin.headers.len() as u64);
    for (k, v) in &origin.headers {
        put_str(buf, k);
        put_str(buf, v);
    }
    finish(buf, start);
}

/// Decodes an origin record's payload into its id and origin.
pub fn decode_origin(payload: &[u8]) -> Option<(u32, Origin)> {
    let mut pos = 0;
    let id = u32::try_from(get_varint(payload, &mut pos)?).ok()?;
    let source = get_str(payload, &mut pos)?;
    let path = get_str(payload, &mut pos)?;
    let file = get_str(payload, &mut pos)?;
    let host = get_str(payload, &mut pos)?;
    let count = get_varint(payload, &mut pos)?;
    let mut headers = Vec::new();
    for _ in 0..count {
        let k = get_str(payload, &mut pos)?;
        let v = get_str(payload, &mut pos)?;
        headers.push((k, v));
    }
    (pos == payload.len()).then_some((
        id,
        Origin {
            source,
            path,
            file,
            host,
            headers,
        },
    ))
}

/// Appends an events record holding `events`; `origin_id` gives each event's origin id. The
/// record is of kind [`KIND_EVENTS_HEADERS`] if any event has headers of its own.
pub fn encode_events(
    buf: &mut Vec<u8>,
    events: &[Event],
    mut origin_id: impl FnMut(&Arc<Origin>) -> u32,
) {
    let headers = events.iter().any(|e| !e.headers.is_empty());
    let start = begin(
        buf,
        if headers {
            KIND_EVENTS_HEADERS
        } else {
            KIND_EVENTS
        },
    );
    let base = events.first().map_or(0, |e| e.read_at_ms);
    put_varint(buf, events.len() as u64);
    put_varint(buf, base);
    for e in events {
        put_varint(buf, u64::from(origin_id(&e.origin)));
        put_varint(buf, e.offset);
        put_varint(buf, zigzag(e.read_at_ms.wrapping_sub(base) as i64));
        put_varint(buf, e.body.len() as u64);
        buf.extend_from_slice(&e.body);
        if headers {
            put_varint(buf, e.headers.len() as u64);
            for (name, value) in e.headers.iter() {
                put_str(buf, name);
                match value {
                    Some(v) => {
                        buf.push(1);
                        put_str(buf, v);
                    }
                    None => buf.push(0),
                }
            }
        }
    }
    finish(buf, start);
}

/// Decodes the headers an [`EventRef::headers`] range of an events payload holds; `None` if
/// they are malformed.
pub fn decode_headers(encoded: &[u8]) -> Option<Headers> {
    let mut headers = Headers::default();
    if encoded.is_empty() {
        return Some(headers);
    }
    let mut pos = 0;
    let count = get_varint(encoded, &mut pos)?;
    for _ in 0..count {
        let name: Arc<str> = get_str(encoded, &mut pos)?.into();
        match *encoded.get(pos)? {
            1 => {
                pos += 1;
                headers.set(name, get_str(encoded, &mut pos)?);
            }
            0 => {
                pos += 1;
                headers.remove(name);
            }
            _ => return None,
        }
    }
    (pos == encoded.len()).then_some(headers)
}

/// One event of an events record, as found in its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    /// The segment-local origin id.
    pub origin: u32,
    /// The byte offset of the line in its file.
    pub offset: u64,
    /// When the line was read, in milliseconds since the Unix epoch.
    pub read_at_ms: u64,
    /// Where the body lies in the payload.
    pub body: Range<usize>,
    /// Where the event's headers lie in the payload (see [`decode_headers`]); empty when it
    /// has none.
    pub headers: Range<usize>,
}

/// The events of an events record's payload, in order.
///
/// It yields `None` after the last event, or early if the payload is malformed, in which case
/// [`EventIter::is_valid`] turns false.
pub struct EventIter<'a> {
    payload: &'a [u8],
    headers: bool,
    pos: usize,
    left: u64,
    base: u64,
    valid: bool,
}

impl<'a> EventIter<'a> {
    /// Starts reading the payload of a record of `kind` (one that [`holds_events`]); `None`
    /// if even its count is unreadable.
    pub fn new(kind: u8, payload: &'a [u8]) -> Option<Self> {
        let mut pos = 0;
        let left = get_varint(payload, &mut pos)?;
        let base = get_varint(payload, &mut pos)?;
        Some(EventIter {
            payload,
            headers: kind == KIND_EVENTS_HEADERS,
            pos,
            left,
            base,
            valid: true,
        })
    }

    /// How many events the record says it holds.
    pub fn remaining(&self) -> u64 {
        self.left
    }

    /// True if every event so far was well formed and, once exhausted, nothing trails them.
    pub fn is_valid(&self) -> bool {
        self.valid && (self.left > 0 || self.pos == self.payload.len())
    }

    fn next_event(&mut self) -> Option<EventRef> {
        let p = self.payload;
        let origin = u32::try_from(get_varint(p, &mut self.pos)?).ok()?;
        let offset = get_varint(p, &mut self.pos)?;
        let delta = unzigzag(get_varint(p, &mut self.pos)?);
        let len = usize::try_from(get_varint(p, &mut self.pos)?).ok()?;
        let start = self.pos;
        let end = start.checked_add(len).filter(|&e| e <= p.len())?;
        self.pos = end;
        let headers = if self.headers {
            let from = self.pos;
            skip_headers(p, &mut self.pos)?;
            from..self.pos
        } else {
            end..end
        };
        Some(EventRef {
            origin,
            offset,
            read_at_ms: self.base.wrapping_add(delta as u64),
            body: start..end,
            headers,
        })
    }
}

impl Iterator for EventIter<'_> {
    type Item = EventRef;

    fn next(&mut self) -> Option<EventRef> {
        if self.left == 0 || !self.valid {
            return None;
        }
        match self.next_event() {
            Some(e) => {
                self.left -= 1;
                Some(e)
            }
            None => {
                self.valid = false;
                None
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn origin() -> Origin {
        Origin {
            source: "r1".into(),
            path: "/var/log/app.log".into(),
            file: "app.log".into(),
            host: "h".into(),
            headers: vec![("env".into(), "prod".into())],
        }
    }

    #[test]
    fn origin_records_round_trip() {
        let mut buf = Vec::new();
        encode_origin(&mut buf, 7, &origin());
        assert!(buf.len() <= origin_record_bound(&origin()));
        let Parsed::Record { kind, payload, len } = parse(&buf) else {
            panic!("not a record")
        };
        assert_eq!((kind, len), (KIND_ORIGIN, buf.len()));
        assert_eq!(decode_origin(payload), Some((7, origin())));
    }

    #[test]
    fn a_damaged_record_is_invalid_and_a_short_one_incomplete() {
        let o = Arc::new(origin());
        let events = vec![Event {
            body: Bytes::from_static(b"hello"),
            origin: o,
            offset: 3,
            read_at_ms: 9,
            headers: Default::default(),
        }];
        let mut buf = Vec::new();
        encode_events(&mut buf, &events, |_| 0);
        for cut in 0..buf.len() {
            assert!(
                matches!(parse(&buf[..cut]), Parsed::Incomplete(_)),
                "cut at {cut}"
            );
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(!matches!(parse(&bad), Parsed::Record { .. }), "flip at {i}");
        }
    }

    #[test]
    fn event_headers_round_trip_and_only_cost_where_set() {
        let o = Arc::new(origin());
        let plain = Event::new(Bytes::from_static(b"plain"), o.clone(), 0, 5);
        let mut set = Event::new(Bytes::from_static(b"with"), o.clone(), 6, 9);
        set.headers.set("level".into(), "ERROR");
        set.headers.remove("env".into());
        set.headers.set("empty".into(), "");
        let events = vec![plain.clone(), set.clone()];
        let mut buf = Vec::new();
        encode_events(&mut buf, &events, |_| 0);
        let bound: usize = events.iter().map(event_bound).sum();
        assert!(buf.len() <= HEADER_LEN + 20 + bound);
        let Parsed::Record { kind, payload, .. } = parse(&buf) else {
            panic!("not a record")
        };
        assert_eq!(kind, KIND_EVENTS_HEADERS);
        let mut it = EventIter::new(kind, payload).unwrap();
        let decoded: Vec<EventRef> = it.by_ref().collect();
        assert!(it.is_valid());
        let headers: Vec<Headers> = decoded
            .iter()
            .map(|d| decode_headers(&payload[d.headers.clone()]).unwrap())
            .collect();
        assert_eq!(headers, vec![plain.headers.clone(), set.headers]);
        assert_eq!(&payload[decoded[1].body.clone()], b"with");

        let mut buf = Vec::new();
        encode_events(&mut buf, &[plain], |_| 0);
        let Parsed::Record { kind, payload, .. } = parse(&buf) else {
            panic!("not a record")
        };
        assert_eq!(kind, KIND_EVENTS, "no event header: the short form");
        let d = EventIter::new(kind, payload).unwrap().next().unwrap();
        assert!(d.headers.is_empty());
        assert!(
            decode_headers(&[1, 1, b'x', 7]).is_none(),
            "a bad set/removed byte"
        );
    }

    /// The tokens worth planting in records: the magic, the kinds, a header's set and
    /// removed bytes.
    pub(crate) const DICTIONARY: &[&[u8]] = &[
        &MAGIC,
        &[KIND_ORIGIN],
        &[KIND_EVENTS],
        &[KIND_EVENTS_HEADERS],
        &[0, 1],
    ];

    /// Valid origin and events records, headers included, one after the other.
    pub(crate) fn valid_records() -> impl Strategy<Value = Vec<u8>> {
        let event = (
            proptest::collection::vec(any::<u8>(), 0..40),
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(("[a-z]{0,6}", proptest::option::of("[a-z]{0,6}"))),
        );
        proptest::collection::vec(proptest::collection::vec(event, 1..4), 0..4).prop_map(
            |batches| {
                let o = Arc::new(origin());
                let mut buf = Vec::new();
                encode_origin(&mut buf, 0, &o);
                for batch in batches {
                    let events: Vec<Event> = batch
                        .into_iter()
                        .map(|(body, offset, at, header)| {
                            let mut e = Event::new(Bytes::from(body), o.clone(), offset, at);
                            match header {
                                Some((name, Some(v))) => e.headers.set(name.into(), v),
                                Some((name, None)) => e.headers.remove(name.into()),
                                None => {}
                            }
                            e
                        })
                        .collect();
                    encode_events(&mut buf, &events, |_| 0);
                }
                buf
            },
        )
    }

    /// The largest allocation a decoder may make for `n` bytes of input.
    fn allocation_bound(n: usize) -> usize {
        4096 + 64 * n
    }

    /// Decodes `payload` as a record of `kind` would be, checking what the decoders promise
    /// of what they accept.
    fn check_payload(kind: u8, payload: &[u8]) -> Result<(), TestCaseError> {
        if kind == KIND_ORIGIN {
            if let Some((id, o)) = decode_origin(payload) {
                let mut again = Vec::new();
                encode_origin(&mut again, id, &o);
                let Parsed::Record { payload: p, .. } = parse(&again) else {
                    panic!("not a record")
                };
                prop_assert_eq!(decode_origin(p), Some((id, o)));
            }
            return Ok(());
        }
        let Some(mut it) = EventIter::new(kind, payload) else {
            return Ok(());
        };
        let said = it.remaining();
        let mut seen = 0u64;
        let mut end = 0;
        for e in it.by_ref() {
            seen += 1;
            prop_assert!(e.body.start >= end && e.body.end <= payload.len());
            prop_assert!(e.headers.start >= e.body.end && e.headers.end <= payload.len());
            end = e.headers.end.max(e.body.end);
            if let Some(h) = decode_headers(&payload[e.headers.clone()]) {
                prop_assert!(h.len() <= e.headers.len());
            }
        }
        prop_assert!(seen <= said);
        if it.is_valid() {
            prop_assert_eq!(seen, said);
        }
        Ok(())
    }

    proptest! {
        /// Hostile bytes, and valid records with mutations (whose checksum then mostly fails),
        /// parse into records that lie within the bytes, a length no larger than the format
        /// allows, or nothing; a walk that resynchronises past damage as recovery does never
        /// panics nor allocates beyond a bound of the input's size.
        #[test]
        fn hostile_bytes_parse_within_bounds(data in crate::fuzzing::hostile(valid_records(), DICTIONARY)) {
            let (walked, largest) = crate::fuzzing::largest_allocation(|| -> Result<(), TestCaseError> {
                let mut pos = 0;
                while pos < data.len() {
                    match parse(&data[pos..]) {
                        Parsed::Record { kind, payload, len } => {
                            prop_assert_eq!(len, HEADER_LEN + payload.len());
                            prop_assert!(pos + len <= data.len());
                            check_payload(kind, payload)?;
                            pos += len;
                        }
                        Parsed::Incomplete(n) => {
                            prop_assert!(n > data.len() - pos && n <= HEADER_LEN + MAX_PAYLOAD);
                            pos += 1;
                        }
                        Parsed::Invalid => pos += 1,
                    }
                }
                Ok(())
            });
            walked?;
            prop_assert!(largest <= allocation_bound(data.len()), "{} bytes allocated", largest);
        }

        /// Mutated payloads sealed with a valid length and checksum, so that they reach the
        /// decoders: what they accept is well formed (an origin re-encodes to itself, events
        /// lie in order inside the payload, no more of them than the count said), and they
        /// never panic nor allocate beyond a bound of the payload's size.
        #[test]
        fn sealed_hostile_payloads_decode_within_bounds(
            data in crate::fuzzing::mutated(valid_records(), DICTIONARY),
            kind in prop_oneof![Just(KIND_ORIGIN), Just(KIND_EVENTS), Just(KIND_EVENTS_HEADERS)],
            from in any::<usize>(),
        ) {
            // The payload from a place near a record's start (or anywhere), sealed anew.
            let from = from % (data.len() + 1);
            let from = data[from..].windows(4).position(|w| w == MAGIC).map_or(from, |i| from + i + HEADER_LEN).min(data.len());
            let mut sealed = Vec::new();
            let start = begin(&mut sealed, kind);
            sealed.extend_from_slice(&data[from..]);
            finish(&mut sealed, start);
            let Parsed::Record { payload, .. } = parse(&sealed) else {
                panic!("not a record")
            };
            let (checked, largest) = crate::fuzzing::largest_allocation(|| check_payload(kind, payload));
            checked?;
            prop_assert!(largest <= allocation_bound(payload.len()), "{} bytes allocated", largest);
        }

        #[test]
        fn events_round_trip(
            items in proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 0..300),
                    any::<u64>(),
                    any::<u64>(),
                    0u32..5,
                ),
                0..20,
            )
        ) {
            let o = Arc::new(origin());
            let events: Vec<Event> = items
                .iter()
                .map(|(b, off, at, _)| Event {
                    body: Bytes::from(b.clone()),
                    origin: o.clone(),
                    offset: *off,
                    read_at_ms: *at,
                    headers: Default::default(),
                })
                .collect();
            let ids: Vec<u32> = items.iter().map(|i| i.3).collect();
            let mut n = 0;
            let mut buf = Vec::new();
            encode_events(&mut buf, &events, |_| {
                n += 1;
                ids[n - 1]
            });
            let bound: usize = events.iter().map(|e| e.body.len() + EVENT_OVERHEAD).sum();
            prop_assert!(buf.len() <= HEADER_LEN + 20 + bound);
            let Parsed::Record { kind, payload, .. } = parse(&buf) else {
                panic!("not a record")
            };
            prop_assert_eq!(kind, KIND_EVENTS);
            let mut it = EventIter::new(kind, payload).unwrap();
            let decoded: Vec<EventRef> = it.by_ref().collect();
            prop_assert!(it.is_valid());
            prop_assert_eq!(decoded.len(), events.len());
            for ((d, e), id) in decoded.iter().zip(&events).zip(&ids) {
                prop_assert_eq!(d.origin, *id);
                prop_assert_eq!(d.offset, e.offset);
                prop_assert_eq!(d.read_at_ms, e.read_at_ms);
                prop_assert_eq!(&payload[d.body.clone()], &e.body[..]);
            }
        }
    }
}
