//! One file's safe offset, advanced over the receipts of its batches as they resolve.

use std::collections::VecDeque;

use sluice_channels::Receipt;

/// The receipts of a file's lines put into the channel, each with the offset it makes safe,
/// and the offset before which every line of the file is safe.
///
/// The safe offset only moves over receipts that resolved, oldest first, so a checkpoint that
/// records it never passes a line that could still be lost.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pending: VecDeque<(Receipt, u64)>,
    safe: u64,
}

impl Progress {
    /// A file every line of which before `safe` is safe, with nothing in flight.
    pub fn at(safe: u64) -> Self {
        Progress {
            pending: VecDeque::new(),
            safe,
        }
    }

    /// Every line before this offset is safe.
    pub fn safe(&self) -> u64 {
        self.safe
    }

    /// True when no receipt is waiting: every line put is safe.
    pub fn is_settled(&self) -> bool {
        self.pending.is_empty()
    }

    /// Records that the lines up to `end` were put under `receipt`.
    pub fn push(&mut self, receipt: Receipt, end: u64) {
        self.pending.push_back((receipt, end));
    }

    /// The reading moved to `end` past bytes that made no event (a long line's dropped
    /// rest): they are safe as soon as everything put before them is. Returns true if the
    /// safe offset moved now.
    pub fn pass(&mut self, end: u64) -> bool {
        match self.pending.back() {
            Some((r, _)) => {
                let r = r.clone();
                self.pending.push_back((r, end));
                false
            }
            None => self.set(end),
        }
    }

    /// With nothing in flight, makes `at` the safe offset (where the file was opened, once
    /// found elsewhere than recorded). Returns true if it moved.
    pub fn settle_at(&mut self, at: u64) -> bool {
        self.pending.is_empty() && self.set(at)
    }

    /// Forgets every receipt and starts over at `at` (the file was truncated or replaced).
    pub fn reset(&mut self, at: u64) {
        self.pending.clear();
        self.safe = at;
    }

    /// Moves the safe offset over the receipts that resolved, oldest first; never waits.
    /// Returns true if it moved.
    pub fn advance(&mut self) -> bool {
        let mut moved = false;
        while self.pending.front().is_some_and(|(r, _)| r.is_safe()) {
            if let Some((_, end)) = self.pending.pop_front() {
                self.safe = end;
                moved = true;
            }
        }
        moved
    }

    /// The oldest receipt not known to be safe yet, to wait on; [`Progress::advance`] then
    /// moves over it.
    pub fn oldest(&mut self) -> Option<&mut Receipt> {
        self.pending.front_mut().map(|(r, _)| r)
    }

    /// Waits for the oldest receipt, and advances over it once it resolved. Returns false if
    /// its channel was dropped first (the lines are not safe); true at once if none waits.
    pub async fn wait_oldest(&mut self) -> bool {
        let Some((receipt, end)) = self.pending.front_mut() else {
            return true;
        };
        let end = *end;
        if !receipt.wait().await {
            return false;
        }
        self.pending.pop_front();
        self.safe = end;
        true
    }

    fn set(&mut self, at: u64) -> bool {
        let moved = self.safe != at;
        self.safe = at;
        moved
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::watch;

    use super::*;

    #[test]
    fn the_safe_offset_moves_only_over_resolved_receipts_in_order() {
        let (tx, rx) = watch::channel(0u64);
        let mut p = Progress::at(5);
        p.push(Receipt::new(1, rx.clone()), 10);
        p.push(Receipt::new(2, rx.clone()), 20);
        assert!(!p.pass(25), "waits for what was put before");
        assert!(!p.advance());
        tx.send_replace(1);
        assert!(p.advance());
        assert_eq!(p.safe(), 10);
        tx.send_replace(2);
        assert!(p.advance());
        assert_eq!(p.safe(), 25);
        assert!(p.is_settled());
        assert!(p.pass(30), "nothing in flight: safe at once");
        assert!(p.settle_at(0) && p.safe() == 0);
    }

    #[tokio::test]
    async fn waiting_on_a_dropped_channel_is_not_safe() {
        let (tx, rx) = watch::channel(0u64);
        let mut p = Progress::at(0);
        p.push(Receipt::new(1, rx), 10);
        drop(tx);
        assert!(!p.wait_oldest().await);
        assert_eq!(p.safe(), 0);
        p.reset(3);
        assert!(p.wait_oldest().await && p.safe() == 3);
    }
}
