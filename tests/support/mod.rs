//! Shared end-to-end test harness.

pub mod agent;
pub mod kafka;
pub mod rotation;
