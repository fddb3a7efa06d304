//! The one place a source puts batches into its channels.

use sluice_channels::lifecycle::{Phase, Shutdown};
use sluice_channels::{Event, Receipt};
use tracing::warn;

use super::pack::{Batch, Mark};
use crate::fanout::Fanout;
use crate::{SourceContext, SourceMetrics};

/// Puts `batches` into the source's channels in order (through its [`Fanout`]: waiting
/// while a required channel is full), and hands each batch's marks its receipt (`track`).
/// Counts the events and bytes put. Returns false, with the rest of the batches not put, if
/// the agent aborts or a required channel refuses a batch (it is closed): the source must
/// stop then.
pub(crate) async fn put(
    ctx: &SourceContext,
    batches: Vec<Batch>,
    shutdown: &mut Shutdown,
    mut track: impl FnMut(&Mark, &Receipt),
) -> bool {
    for Batch { events, marks } in batches {
        let receipt = tokio::select! {
            r = put_one(&ctx.channels, &ctx.metrics, events) => r,
            _ = shutdown.reached(Phase::Aborting) => return false,
        };
        let Some(receipt) = receipt else {
            return false;
        };
        for m in &marks {
            track(m, &receipt);
        }
    }
    true
}

/// Puts one batch's `events`, waiting while a required channel is full, and counts them in
/// `metrics`; `None` (logged) if a required channel refuses them: the source must stop then.
/// Dropped before it ends, it may have put the batch into some of the channels only.
pub(crate) async fn put_one(
    channels: &Fanout,
    metrics: &SourceMetrics,
    events: Vec<Event>,
) -> Option<Receipt> {
    let count = events.len() as u64;
    let bytes: u64 = events.iter().map(|e| e.body.len() as u64).sum();
    match channels.put(events, metrics).await {
        Ok(r) => {
            SourceMetrics::add(&metrics.events, count);
            SourceMetrics::add(&metrics.bytes, bytes);
            Some(r)
        }
        Err(e) => {
            warn!(error = %e, "channel refused a batch; stopping");
            None
        }
    }
}
