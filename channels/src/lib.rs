//! The core of Sluice: the [`Event`] that flows from sources to sinks, the transactional
//! [`Channel`] trait that connects them, and the channels that implement it.
//!
//! Every hand-off is a transaction: a source's [`Channel::put`] returns a [`Receipt`] that
//! resolves once the batch is *safe* (what that means is the channel's choice), and a sink
//! removes events only with [`Channel::commit`] after it delivered them, or returns them to the
//! head of the queue with [`Channel::rollback`].

mod channel;
mod chunks;
pub mod config;
mod event;
pub mod family;
mod file;
pub mod fsutil;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod lifecycle;
mod memory;
pub mod names;
mod secret;
pub mod units;

pub use channel::{BoxFuture, Channel, ChannelError, ChannelStats, Lease, Receipt};
pub use event::{DROPPED_FROM_HEADER, END_HEADER, Event, Headers, Origin, REWRITES_HEADER};
pub use file::{
    FileChannel, FileChannelConfig, FileChannelCounters, FileChannelError, FsyncPolicy,
};
pub use memory::{MemoryChannel, MemoryChannelConfig};
pub use secret::{MASK, Secret};

#[cfg(test)]
#[global_allocator]
static ALLOC: fuzzing::CountingAlloc = fuzzing::CountingAlloc;
