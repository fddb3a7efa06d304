//! Shared end-to-end test harness.

pub mod agent;
