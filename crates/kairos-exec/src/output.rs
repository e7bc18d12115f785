//! Captured output of one attempt: a capped buffer that keeps the head and the tail.
//!
//! Lines arrive from the task's stdout and stderr, from hooks and from Kairos itself. The first
//! half of the limit keeps the earliest lines, the second half the latest ones; whatever falls in
//! between is dropped and counted, and [`OutputBuffer::snapshot`] shows a marker line
//! `... [N bytes truncated] ...` where it was. The buffer is readable while the attempt runs
//! (live logs) and is closed by the executor when the attempt ends.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Per-attempt output limit used by the runtime unless configured otherwise: 1 MiB.
pub const DEFAULT_OUTPUT_LIMIT: usize = 1024 * 1024;

/// Capped, shared capture of an attempt's output lines.
#[derive(Debug)]
pub struct OutputBuffer {
    limit: usize,
    inner: Mutex<Inner>,
    closed: AtomicBool,
    /// Bumped on every line and on close; waiters compare against the value they saw.
    version: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    head: String,
    /// False once a line did not fit into the head: later lines only go to the tail, so that
    /// the order of lines is kept.
    head_open: bool,
    tail: VecDeque<String>,
    tail_bytes: usize,
    dropped: u64,
    written: u64,
    /// Start offset in `head` of each line kept there.
    head_offsets: Vec<usize>,
    /// Lines pushed in all (a follower's cursor counts these).
    lines: u64,
}

impl OutputBuffer {
    /// A buffer keeping at most about `limit_bytes` of output (plus the marker line).
    pub fn new(limit_bytes: usize) -> Self {
        let (version, _) = watch::channel(0);
        Self {
            limit: limit_bytes,
            inner: Mutex::new(Inner {
                head_open: true,
                ..Inner::default()
            }),
            closed: AtomicBool::new(false),
            version,
        }
    }

    /// Appends one line (a newline is added). Lines pushed after [`close`](Self::close) are kept
    /// too, but waiters are no longer woken for them.
    pub fn push_line(&self, line: &str) {
        let head_cap = self.limit / 2;
        let tail_cap = self.limit - head_cap;
        {
            let mut inner = self.lock();
            let entry_len = line.len() + 1;
            inner.written += entry_len as u64;
            inner.lines += 1;
            if inner.head_open && inner.head.len() + entry_len <= head_cap {
                let start = inner.head.len();
                inner.head_offsets.push(start);
                inner.head.push_str(line);
                inner.head.push('\n');
            } else {
                inner.head_open = false;
                if tail_cap == 0 {
                    inner.dropped += entry_len as u64;
                } else {
                    let entry = if entry_len > tail_cap {
                        // One line longer than the tail: keep its start (timestamp and stream).
                        let keep = floor_char_boundary(line, tail_cap - 1);
                        inner.dropped += (line.len() - keep) as u64;
                        format!("{}\n", &line[..keep])
                    } else {
                        format!("{line}\n")
                    };
                    inner.tail_bytes += entry.len();
                    inner.tail.push_back(entry);
                }
                while inner.tail_bytes > tail_cap {
                    let Some(front) = inner.tail.pop_front() else {
                        break;
                    };
                    inner.tail_bytes -= front.len();
                    inner.dropped += front.len() as u64;
                }
            }
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Appends `<RFC 3339 UTC timestamp with milliseconds> <stream> <text>`, the format of every
    /// line Kairos captures, e.g. `2026-11-21T01:02:03.456Z stdout hello`.
    pub fn push_stream_line(&self, stream: &str, text: &str) {
        self.push_line(&format!("{:.3} {stream} {text}", line_timestamp()));
    }

    /// For a follower at `cursor` (lines already seen): the lines after it that are still held,
    /// the new cursor, and how many lines in between the cap dropped before they could be seen.
    pub fn lines_since(&self, cursor: u64) -> (String, u64, u64) {
        let inner = self.lock();
        let head_lines = inner.head_offsets.len() as u64;
        let mut out = String::new();
        if cursor < head_lines {
            out.push_str(&inner.head[inner.head_offsets[cursor as usize]..]);
        }
        let tail_start = inner.lines - inner.tail.len() as u64;
        let from = cursor.max(head_lines);
        let skipped = tail_start.saturating_sub(from);
        let first = from.max(tail_start);
        for entry in inner.tail.iter().skip((first - tail_start) as usize) {
            out.push_str(entry);
        }
        (out, inner.lines, skipped)
    }

    /// The captured output: head, the truncation marker when something was dropped, tail.
    pub fn snapshot(&self) -> String {
        let inner = self.lock();
        let mut out = String::with_capacity(inner.head.len() + inner.tail_bytes + 48);
        out.push_str(&inner.head);
        if inner.dropped > 0 {
            out.push_str(&format!("... [{} bytes truncated] ...\n", inner.dropped));
        }
        for entry in &inner.tail {
            out.push_str(entry);
        }
        out
    }

    /// Whether the cap dropped part of the output.
    pub fn is_truncated(&self) -> bool {
        self.lock().dropped > 0
    }

    /// Bytes pushed so far (newlines included), kept or not.
    pub fn len_written(&self) -> u64 {
        self.lock().written
    }

    /// A counter that changes whenever a line is pushed or the buffer is closed; pair it with
    /// [`changed_since`](Self::changed_since) to follow output without missing a line.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Resolves as soon as [`version`](Self::version) differs from `seen` or the buffer is closed.
    pub async fn changed_since(&self, seen: u64) {
        let mut rx = self.version.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|v| *v != seen || self.is_closed()).await;
    }

    /// Resolves when output arrives after this call, or the buffer is closed (at once if it is
    /// closed). The version is taken when `changed` is called, not when the future is first
    /// polled, so a line pushed in between is not missed.
    pub fn changed(&self) -> impl Future<Output = ()> + Send + '_ {
        let seen = self.version();
        self.changed_since(seen)
    }

    /// Marks the end of the attempt's output and wakes every waiter.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.version.send_modify(|v| *v += 1);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the buffer consistent enough to read.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for OutputBuffer {
    fn default() -> Self {
        Self::new(DEFAULT_OUTPUT_LIMIT)
    }
}

/// The wall-clock time stamped on captured lines. Output lines record when they were written,
/// which is a fact about the world rather than a scheduling decision, so they read the real clock
/// (the only place in this crate that does).
#[allow(
    clippy::disallowed_methods,
    reason = "captured lines are stamped with the real time they were written, not a scheduling clock"
)]
fn line_timestamp() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// The largest index `<= max` that is a char boundary of `s`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Splits a byte stream into lines for the buffer: UTF-8 decoded lossily, `\n` (and a `\r`
/// before it) removed, over-long lines cut into pieces so a stream without newlines cannot grow
/// memory without bound.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

/// Longest line kept in one piece; longer lines are emitted in pieces of this size.
pub(crate) const MAX_LINE_BYTES: usize = 16 * 1024;

impl LineSplitter {
    /// Feeds bytes; calls `emit` for every complete line.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(&str)) {
        while !bytes.is_empty() {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(pos) => {
                    self.pending.extend_from_slice(&bytes[..pos]);
                    bytes = &bytes[pos + 1..];
                    if self.pending.last() == Some(&b'\r') {
                        self.pending.pop();
                    }
                    self.flush(emit);
                }
                None => {
                    self.pending.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
            while self.pending.len() >= MAX_LINE_BYTES {
                let rest = self.pending.split_off(MAX_LINE_BYTES);
                self.flush(emit);
                self.pending = rest;
            }
        }
    }

    /// Emits what is left (a last line without a newline).
    pub(crate) fn finish(&mut self, emit: &mut impl FnMut(&str)) {
        if !self.pending.is_empty() {
            self.flush(emit);
        }
    }

    fn flush(&mut self, emit: &mut impl FnMut(&str)) {
        emit(&String::from_utf8_lossy(&self.pending));
        self.pending.clear();
    }
}

#[cfg(test)]
mod follow_tests {
    use super::OutputBuffer;

    #[test]
    fn lines_since_keeps_a_follower_in_place_across_the_cap() {
        let buf = OutputBuffer::new(100);
        for i in 0..3 {
            buf.push_line(&format!("line {i:02}"));
        }
        let (text, cursor, skipped) = buf.lines_since(0);
        assert_eq!(
            (text.as_str(), cursor, skipped),
            ("line 00\nline 01\nline 02\n", 3, 0)
        );
        let (text, cursor, _) = buf.lines_since(cursor);
        assert_eq!((text.as_str(), cursor), ("", 3));
        // Far more than the cap: the follower learns how many lines it missed, then the tail.
        for i in 3..40 {
            buf.push_line(&format!("line {i:02}"));
        }
        let (text, cursor, skipped) = buf.lines_since(3);
        assert_eq!(cursor, 40);
        assert!(skipped > 0);
        assert!(text.ends_with("line 39\n"), "{text}");
        let kept = text.lines().count() as u64;
        assert_eq!(
            3 + skipped + kept,
            40,
            "every line is either sent or counted as dropped"
        );
        buf.push_line("line 40");
        assert_eq!(buf.lines_since(cursor), ("line 40\n".to_owned(), 41, 0));
    }
}
