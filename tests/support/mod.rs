//! Shared end-to-end test harness.

pub mod agent;
pub mod flume;
pub mod kafka;
pub mod rotation;
pub mod tail_topic;
