//! The agent's shutdown signal, as seen by its components.

use tokio::sync::watch;

/// The phases of an agent's life, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Sources read, sinks deliver.
    Running,
    /// Sources stop reading and wait for what they put to become safe; sinks drain.
    Draining,
    /// The drain deadline passed: every component saves what it can and returns now.
    Aborting,
}

/// A component's view of the agent's phase; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<Phase>,
}

/// The agent's handle that moves every [`Shutdown`] to the next phase.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<Phase>,
}

impl ShutdownTrigger {
    /// A trigger in the `Running` phase.
    pub fn new() -> Self {
        ShutdownTrigger {
            tx: watch::channel(Phase::Running).0,
        }
    }

    /// A view for one component.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }

    /// Moves every view to `phase`, if it is later than the current one.
    pub fn advance(&self, phase: Phase) {
        self.tx.send_if_modified(|p| {
            let later = phase > *p;
            if later {
                *p = phase;
            }
            later
        });
    }
}

impl Default for ShutdownTrigger {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A view that stays `Running` for as long as the trigger lives (for tests and tools).
    pub fn never(trigger: &ShutdownTrigger) -> Self {
        trigger.subscribe()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.rx.borrow()
    }

    /// True once the agent is draining or aborting.
    pub fn is_stopping(&self) -> bool {
        self.phase() >= Phase::Draining
    }

    /// True once the drain deadline has passed.
    pub fn is_aborting(&self) -> bool {
        self.phase() >= Phase::Aborting
    }

    /// Resolves once the phase is at least `phase` (or the trigger is gone).
    pub async fn reached(&mut self, phase: Phase) {
        let _ = self.rx.wait_for(|p| *p >= phase).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn views_follow_the_trigger_forward_only() {
        let trigger = ShutdownTrigger::new();
        let mut view = trigger.subscribe();
        assert_eq!(view.phase(), Phase::Running);
        trigger.advance(Phase::Aborting);
        trigger.advance(Phase::Draining);
        view.reached(Phase::Draining).await;
        assert!(view.is_aborting());
    }
}
