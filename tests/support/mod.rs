//! Shared end-to-end test harness.

pub mod agent;
pub mod kafka;
pub mod rotation;
pub mod tail_topic;
