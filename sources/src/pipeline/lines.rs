//! One file's lines between the framer and the packer, and the stages they go through.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sluice_channels::names::escape_path;
use sluice_channels::{END_HEADER, Headers, Origin};
use tracing::warn;

use super::pack::{Key, Packer};
use crate::framing::{LineFramer, LongLinePolicy, LongLines};
use crate::{SourceContext, SourceMetrics};

/// One framed line (or, once a stage joined several, one event): its body (no terminator),
/// the file offset where it starts, and the headers a stage gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// The body, without its terminator.
    pub body: Bytes,
    /// The offset of its first byte in the file.
    pub offset: u64,
    /// Headers set by a stage; empty (no allocation) otherwise.
    pub headers: Headers,
}

impl Line {
    /// A line with no header, as the framer cuts it.
    pub fn new(body: Bytes, offset: u64) -> Self {
        Line {
            body,
            offset,
            headers: Headers::default(),
        }
    }

    /// The offset just past its last byte in the file, terminator excluded: what a stage
    /// recorded in [`END_HEADER`], or else the end of its body.
    pub fn end(&self) -> u64 {
        self.headers
            .get(END_HEADER)
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.offset + self.body.len() as u64)
    }

    /// Records in [`END_HEADER`] (named by `name`) that it ends at `end` in the file, if its
    /// body does not say so already.
    pub fn set_end(&mut self, name: &Arc<str>, end: u64) {
        if end != self.offset + self.body.len() as u64 || self.headers.get(name).is_some() {
            self.headers.set(name.clone(), end.to_string());
        }
    }
}

/// A step between framing and packing that rewrites one file's lines, in file order.
///
/// A stage lives as long as its file's reader, so it may keep state across reads (a
/// multiline event still open). Offsets are those of the file's bytes, whatever a stage does
/// to the bodies.
pub(crate) trait Stage: Send {
    /// Rewrites the lines of one read in place. `last` says the file ends after them: a stage
    /// that holds lines back must hand them out now.
    fn apply(&mut self, lines: &mut Vec<Line>, last: bool);

    /// The offset of the first byte of a line the stage holds back, not handed out yet: the
    /// file's events are complete only up to there.
    fn held_from(&self) -> Option<u64> {
        None
    }

    /// Whether the stage holds lines it would hand out at `now` if the source packed the
    /// file again with nothing new (a multiline event whose timeout passed).
    fn flush_due(&self, _now: Instant) -> bool {
        false
    }
}

/// A file's framed lines and its stages. The line buffer is kept from read to read to reuse
/// its allocation.
pub(crate) struct FileLines {
    lines: Vec<Line>,
    stages: Vec<Box<dyn Stage>>,
}

impl FileLines {
    /// An empty buffer whose lines go through `stages`, in order.
    pub fn new(stages: Vec<Box<dyn Stage>>) -> Self {
        FileLines {
            lines: Vec::new(),
            stages,
        }
    }

    /// An `emit` for the framer that appends each line.
    pub fn collect(&mut self) -> impl FnMut(Bytes, u64) + '_ {
        |body, offset| self.lines.push(Line::new(body, offset))
    }

    /// The lines framed and not packed yet, as the framer cut them.
    pub fn framed(&self) -> &[Line] {
        &self.lines
    }

    /// Runs the stages over the framed lines and packs what comes out into `packer` as the
    /// lines of file `key` (of `generation`), whose events carry `origin`. `framed_to` is the
    /// framer's offset; the file's mark ends there, or where a stage holds a line back.
    /// `last` says the file ends here. Returns the offset the mark ends at, or `None` if no
    /// event came out (nothing was marked).
    pub fn pack(
        &mut self,
        packer: &mut Packer,
        (key, generation): (Key, u32),
        origin: &Arc<Origin>,
        framed_to: u64,
        last: bool,
    ) -> Option<u64> {
        for stage in &mut self.stages {
            stage.apply(&mut self.lines, last);
        }
        let end = self.complete_to(framed_to);
        if self.lines.is_empty() {
            return None;
        }
        packer.add((key, generation), origin, &mut self.lines, end);
        Some(end)
    }

    /// Frames the complete lines `framer` holds (with `last`, also the unterminated tail: the
    /// file ends there) and packs them as [`FileLines::pack`] does. With no stage the lines
    /// go straight from the framer into the batches, with no copy in between.
    pub fn frame_and_pack(
        &mut self,
        framer: &mut LineFramer,
        packer: &mut Packer,
        file: (Key, u32),
        origin: &Arc<Origin>,
        last: bool,
    ) -> Option<u64> {
        if self.stages.is_empty() && self.lines.is_empty() {
            packer.begin(file, origin);
            let push = |body, offset| packer.push(body, offset);
            if last {
                framer.finish(push);
            } else {
                framer.frame(push);
            }
            let end = framer.offset();
            return packer.end(end).then_some(end);
        }
        if last {
            framer.finish(self.collect());
        } else {
            framer.frame(self.collect());
        }
        self.pack(packer, file, origin, framer.offset(), last)
    }

    /// Whether a stage holds lines due out at `now` (see [`Stage::flush_due`]).
    pub fn flush_due(&self, now: Instant) -> bool {
        self.stages.iter().any(|s| s.flush_due(now))
    }

    /// Where the file's complete events end, given that the framer stopped at `framed_to`.
    pub fn complete_to(&self, framed_to: u64) -> u64 {
        self.stages
            .iter()
            .filter_map(|s| s.held_from())
            .fold(framed_to, u64::min)
    }
}

/// Logs and counts the long lines a framer met since the last report (`new`): how many, and
/// what the policy did with them.
pub(crate) fn long_lines(
    ctx: &SourceContext,
    file: &Path,
    offset: u64,
    new: LongLines,
    (max_line_bytes, policy): (u64, LongLinePolicy),
) {
    if new.lines == 0 && new.dropped_bytes == 0 {
        return;
    }
    if new.lines > 0 {
        warn!(file = %escape_path(file), offset, lines = new.lines,
            max_line_bytes, policy = ?policy, "lines longer than max_line_bytes");
    }
    SourceMetrics::add(&ctx.metrics.long_lines, new.lines);
    SourceMetrics::add(&ctx.metrics.long_line_bytes_dropped, new.dropped_bytes);
}
