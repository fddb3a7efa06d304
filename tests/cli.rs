//! End-to-end checks of the `sluice` command line.
