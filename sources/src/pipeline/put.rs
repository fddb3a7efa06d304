//! The one place a source puts batches into its channels.

use sluice_channels::Receipt;
use sluice_channels::lifecycle::{Phase, Shutdown};
use tracing::warn;

use super::pack::{Batch, Mark};
use crate::{SourceContext, SourceMetrics};

/// Puts `batches` into the source's channels in order (through its [`Fanout`]: waiting
/// while a required channel is full), and hands each batch's marks its receipt (`track`).
/// Counts the events and bytes put. Returns false, with the rest of the batches not put, if
/// the agent aborts or a required channel refuses a batch (it is closed): the source must
/// stop then.
///
/// [`Fanout`]: crate::fanout::Fanout
pub(crate) async fn put(
    ctx: &SourceContext,
    batches: Vec<Batch>,
    shutdown: &mut Shutdown,
    mut track: impl FnMut(&Mark, &Receipt),
) -> bool {
    for Batch { events, marks } in batches {
        let count = events.len() as u64;
        let bytes: u64 = events.iter().map(|e| e.body.len() as u64).sum();
        let receipt = tokio::select! {
            r = ctx.channels.put(events, &ctx.metrics) => r,
            _ = shutdown.reached(Phase::Aborting) => return false,
        };
        let receipt = match receipt {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "channel refused a batch; stopping");
                return false;
            }
        };
        SourceMetrics::add(&ctx.metrics.events, count);
        SourceMetrics::add(&ctx.metrics.bytes, bytes);
        for m in &marks {
            track(m, &receipt);
        }
    }
    true
}
