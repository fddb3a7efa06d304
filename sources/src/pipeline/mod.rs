//! The path every source's lines take from framing to the channel, written once for all
//! sources:
//!
//! ```text
//! framer ─► FileLines (stages) ─► Packer ─► put ─► Progress (safe offset per file)
//! ```
//!
//! - A source frames a file's bytes into a [`FileLines`], one per file, which runs the
//!   file's [stages](Stage) over the lines of each read (transcoding, the container format,
//!   multiline, then the interceptors) and knows up to where the file's events
//!   are complete.
//! - A [`Packer`] packs the lines of one file or several into [`Batch`]es of at most
//!   `batch_size` events, each with one [`Mark`] per file: the offset just past that file's
//!   last complete event in the batch.
//! - [`put`] puts the batches into the channel in order, counts them, and hands each mark its
//!   batch's receipt.
//! - A [`Progress`] per file keeps those receipts with their offsets and advances the file's
//!   safe offset only over receipts that resolved, oldest first: what a checkpoint records
//!   never passes an event that is not safe, nor one a stage still holds.

mod container;
mod intercept;
mod lines;
mod multiline;
mod pack;
mod progress;
mod put;
#[cfg(test)]
mod testing;
mod transcode;

pub(crate) use container::Container;
pub use container::{Format, STREAM_HEADER, TIME_HEADER};
pub use intercept::{InterceptorConfig, Interceptors};
pub(crate) use lines::{FileLines, Stage, long_lines};
pub(crate) use multiline::Multiline;
pub use multiline::MultilineConfig;
pub(crate) use pack::{Batch, Key, Packer};
pub(crate) use progress::Progress;
pub(crate) use put::{put, put_one};
pub(crate) use transcode::Transcode;
