//! Helpers for the property tests that feed hostile bytes to the parsers of what others
//! wrote (segment files, checkpoints, position files, configuration, container logs):
//! mutations of a valid encoding, so that the bytes get past a parser's first checks, and a
//! measure of the largest allocation a parse makes, so that a length field read from the
//! input cannot size one unchecked.
//!
//! Built for this crate's tests and, with the `fuzzing` feature, for the other crates' tests.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;

/// One change to a byte string. Positions are taken modulo the string's length (plus one
/// where its end is a place too), so that any mutation applies to any string.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// The byte at the position XORed with the mask (taken as 1 when it is 0).
    Flip(usize, u8),
    /// The string cut at the position.
    Truncate(usize),
    /// The bytes inserted at the position.
    Insert(usize, Vec<u8>),
    /// The bytes written over those from the position on (as many as fit).
    Overwrite(usize, Vec<u8>),
    /// Up to this many bytes removed from the position on.
    Remove(usize, usize),
    /// Up to this many bytes from the position on repeated right after themselves.
    Duplicate(usize, usize),
}

impl Mutation {
    /// Applies the change to `data`.
    pub fn apply(&self, data: &mut Vec<u8>) {
        let len = data.len();
        let place = |at: usize| at % (len + 1);
        match self {
            Mutation::Flip(at, mask) if len > 0 => data[at % len] ^= (*mask).max(1),
            Mutation::Truncate(at) => data.truncate(place(*at)),
            Mutation::Insert(at, bytes) => {
                let at = place(*at);
                data.splice(at..at, bytes.iter().copied());
            }
            Mutation::Overwrite(at, bytes) => {
                let at = place(*at);
                let n = bytes.len().min(len - at);
                data[at..at + n].copy_from_slice(&bytes[..n]);
            }
            Mutation::Remove(at, n) => {
                let at = place(*at);
                data.drain(at..at + (*n).min(len - at));
            }
            Mutation::Duplicate(at, n) => {
                let at = place(*at);
                let end = at + (*n).min(len - at);
                let copy = data[at..end].to_vec();
                data.splice(end..end, copy);
            }
            Mutation::Flip(..) => {}
        }
    }
}

/// Bytes worth planting in an encoding: the little-endian forms of integers at the edges of
/// length fields, a varint that never ends, and the tokens of `dictionary` (the format's
/// magic numbers, keywords, delimiters).
pub fn planted(dictionary: &[&'static [u8]]) -> BoxedStrategy<Vec<u8>> {
    let edges = prop_oneof![
        Just(0u64),
        Just(1),
        Just(0x7F),
        Just(0x80),
        Just(0xFFFF),
        Just(0x7FFF_FFFF),
        Just(0xFFFF_FFFF),
        Just(u64::MAX),
        any::<u64>(),
    ];
    let integers = (edges, prop_oneof![Just(1usize), Just(2), Just(4), Just(8)])
        .prop_map(|(v, width)| v.to_le_bytes()[..width].to_vec());
    let endless = (1usize..12).prop_map(|n| vec![0xFF; n]);
    let random = proptest::collection::vec(any::<u8>(), 1..8);
    if dictionary.is_empty() {
        prop_oneof![integers, endless, random].boxed()
    } else {
        let token = proptest::sample::select(dictionary.to_vec()).prop_map(<[u8]>::to_vec);
        prop_oneof![3 => token, 1 => integers, 1 => endless, 1 => random].boxed()
    }
}

/// The tokens of JSON worth planting in a JSON file, to join with a format's keys.
pub const JSON: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\"\\u0000\"",
    b"null",
    b"-1",
    b"1e999",
    b"18446744073709551616",
];

/// A random [`Mutation`], planting [`planted`] bytes where it inserts or overwrites.
pub fn mutation(dictionary: &[&'static [u8]]) -> impl Strategy<Value = Mutation> + use<> {
    let at = any::<usize>();
    prop_oneof![
        3 => (at, any::<u8>()).prop_map(|(a, m)| Mutation::Flip(a, m)),
        1 => at.prop_map(Mutation::Truncate),
        2 => (at, planted(dictionary)).prop_map(|(a, b)| Mutation::Insert(a, b)),
        2 => (at, planted(dictionary)).prop_map(|(a, b)| Mutation::Overwrite(a, b)),
        1 => (at, 1usize..16).prop_map(|(a, n)| Mutation::Remove(a, n)),
        1 => (at, 1usize..64).prop_map(|(a, n)| Mutation::Duplicate(a, n)),
    ]
}

/// A valid encoding from `valid` with one to four [`mutation`]s applied.
pub fn mutated<S: Strategy<Value = Vec<u8>>>(
    valid: S,
    dictionary: &[&'static [u8]],
) -> impl Strategy<Value = Vec<u8>> + use<S> {
    (valid, proptest::collection::vec(mutation(dictionary), 1..5)).prop_map(
        |(mut data, changes)| {
            for m in &changes {
                m.apply(&mut data);
            }
            data
        },
    )
}

/// One of `texts` (valid inputs written out, such as shipped configuration files), as bytes.
pub fn one_of(texts: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    proptest::sample::select(texts).prop_map(|s| s.as_bytes().to_vec())
}

/// Arbitrary bytes, or a valid encoding from `valid` mutated (the half that gets past a
/// parser's first checks).
pub fn hostile(
    valid: impl Strategy<Value = Vec<u8>> + 'static,
    dictionary: &[&'static [u8]],
) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..512),
        3 => mutated(valid, dictionary),
    ]
    .boxed()
}

thread_local! {
    /// The largest allocation of this thread since [`largest_allocation`] began measuring;
    /// `None` while it does not.
    static LARGEST: Cell<Option<usize>> = const { Cell::new(None) };
}

fn note(size: usize) {
    // Never fails while the thread lives; a thread being torn down is not measured.
    let _ = LARGEST.try_with(|l| {
        if let Some(m) = l.get() {
            l.set(Some(m.max(size)));
        }
    });
}

/// The system allocator, noting the size of each allocation for [`largest_allocation`]. A
/// crate whose tests measure allocations makes it the global allocator of its test binary.
pub struct CountingAlloc;

// SAFETY: every call is passed on to `System` unchanged; noting a size allocates nothing.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract, which is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` was allocated by `System` with `layout`; the caller upholds the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns what it returned with the size of the largest single allocation it
/// made on this thread. Panics if the global allocator is not [`CountingAlloc`]: nothing
/// would be measured.
pub fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|l| l.set(Some(0)));
    drop(std::hint::black_box(Vec::<u8>::with_capacity(3)));
    assert_eq!(
        LARGEST.with(Cell::get),
        Some(3),
        "the test binary's global allocator must be sluice_channels::fuzzing::CountingAlloc"
    );
    LARGEST.with(|l| l.set(Some(0)));
    let r = f();
    let largest = LARGEST.with(|l| l.replace(None)).unwrap_or(0);
    (r, largest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_apply_to_any_string_and_allocations_are_measured() {
        let all = [
            Mutation::Flip(7, 0),
            Mutation::Truncate(2),
            Mutation::Insert(100, vec![9, 9]),
            Mutation::Overwrite(3, vec![7, 7, 7]),
            Mutation::Remove(1, 100),
            Mutation::Duplicate(0, 2),
        ];
        for m in &all {
            m.apply(&mut Vec::new());
        }
        let mut data = vec![0, 1, 2, 3];
        Mutation::Flip(5, 0).apply(&mut data);
        assert_eq!(data, [0, 0, 2, 3]);
        Mutation::Overwrite(3, vec![7, 7, 7]).apply(&mut data);
        assert_eq!(data, [0, 0, 2, 7]);
        Mutation::Duplicate(1, 2).apply(&mut data);
        assert_eq!(data, [0, 0, 2, 0, 2, 7]);
        Mutation::Remove(4, 9).apply(&mut data);
        assert_eq!(data, [0, 0, 2, 0]);
        Mutation::Insert(4, vec![5]).apply(&mut data);
        assert_eq!(data, [0, 0, 2, 0, 5]);
        Mutation::Truncate(7).apply(&mut data);
        assert_eq!(data, [0]);

        let (v, largest) = largest_allocation(|| vec![0u8; 5000]);
        assert_eq!((v.len(), largest), (5000, 5000));
        assert_eq!(largest_allocation(|| 1 + 1), (2, 0));
    }
}
