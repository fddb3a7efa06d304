//! Defaults both sources share, so that they agree with each other and with the sinks.

use sluice_channels::units::ByteSize;

/// Lines per batch put into the channel.
pub(crate) fn batch_size() -> usize {
    1000
}

/// The longest line kept whole: 960 KiB, so that a line cut at it, with its key and headers,
/// fits the Kafka sink's default `max_message_bytes` (1,000,000).
pub(crate) fn max_line_bytes() -> ByteSize {
    ByteSize(960 << 10)
}
