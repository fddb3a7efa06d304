//! Leasing from a queue of chunks: the channels keep each put (or each record read back)
//! whole, so that taking moves vectors of events rather than events one by one.

use std::collections::VecDeque;

use crate::channel::Lease;
use crate::event::Event;

/// A run of consecutive events kept whole in a channel's queue.
pub(crate) trait EventChunk: Sized {
    /// The sequence number of the first event.
    fn first_seq(&self) -> u64;
    /// The events.
    fn events_mut(&mut self) -> &mut Vec<Event>;
    /// The sum of the events' weights.
    fn bytes(&self) -> usize;
    /// Keeps the first `n` events and returns the rest as a chunk of its own.
    fn split_off(&mut self, n: usize) -> Self;
}

/// Moves up to `max` (at least 1) of the oldest events of `queue` into a lease, whole chunks
/// when they fit; a chunk that does not fit is split and its rest stays at the head. `taken`
/// sees every chunk (or part of one) that goes into the lease, in order.
pub(crate) fn lease<C: EventChunk>(
    queue: &mut VecDeque<C>,
    max: usize,
    mut taken: impl FnMut(&C),
) -> Option<Lease> {
    let max = max.max(1);
    let first = queue.pop_front()?;
    let mut lease = Lease {
        first_seq: first.first_seq(),
        events: Vec::new(),
        bytes: 0,
    };
    let mut next = Some(first);
    while let Some(mut chunk) = next.take() {
        let room = max - lease.events.len();
        if chunk.events_mut().len() > room {
            let rest = chunk.split_off(room);
            queue.push_front(rest);
        }
        taken(&chunk);
        lease.bytes += chunk.bytes();
        let events = chunk.events_mut();
        if lease.events.is_empty() {
            lease.events = std::mem::take(events);
        } else {
            lease.events.append(events);
        }
        if lease.events.len() < max {
            next = queue.pop_front();
        }
    }
    Some(lease)
}

/// The sum of the weights of `events`.
pub(crate) fn weight(events: &[Event]) -> usize {
    events.iter().map(Event::weight).sum()
}
