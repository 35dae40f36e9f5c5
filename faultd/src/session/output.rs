//! A service's stdout and stderr: each line an event on the session's bus (cut at [`MAX_LINE`]
//! bytes), the last [`TAIL_LINES`] kept for its summary and for start errors.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use tracing::Instrument;

use crate::trace::{EventBus, EventKind, Stream};

/// Lines of each stream kept for the summary.
const TAIL_LINES: usize = 50;

/// The last lines of one stream.
pub(super) type Tail = Arc<Mutex<VecDeque<String>>>;

pub(super) fn stderr_excerpt(tail: &Tail) -> String {
    let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
    if tail.is_empty() {
        return String::new();
    }
    let last: Vec<&str> = tail
        .iter()
        .rev()
        .take(10)
        .rev()
        .map(String::as_str)
        .collect();
    format!("; last lines of its stderr:\n  {}", last.join("\n  "))
}

pub(super) fn spawn_output_reader(
    fd: OwnedFd,
    stream: Stream,
    service: &Arc<str>,
    bus: &Arc<EventBus>,
    tail: &Tail,
) -> watch::Receiver<bool> {
    let (done, drained) = watch::channel(false);
    let service = service.clone();
    let bus = bus.clone();
    let tail = tail.clone();
    // SAFETY: fcntl on an fd we own, with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    tokio::spawn(
        async move {
            if let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                let mut reader = tokio::io::BufReader::new(pipe);
                let mut line = LineBuffer::default();
                loop {
                    let chunk = match reader.fill_buf().await {
                        Ok([]) | Err(_) => break,
                        Ok(chunk) => chunk,
                    };
                    let (used, complete) = line.push(chunk);
                    reader.consume(used);
                    if let Some(text) = complete {
                        emit_line(&service, &bus, &tail, stream, text);
                    }
                }
                if let Some(text) = line.finish() {
                    emit_line(&service, &bus, &tail, stream, text);
                }
            }
            let _ = done.send(true);
        }
        .in_current_span(),
    );
    drained
}

/// The longest output line kept; the rest of a longer line is counted, not kept.
const MAX_LINE: usize = 64 << 10;

/// One output line being read, at most [`MAX_LINE`] bytes of it.
#[derive(Default)]
struct LineBuffer {
    bytes: Vec<u8>,
    dropped: usize,
}

impl LineBuffer {
    /// Takes `chunk` up to its first newline: how many bytes were used, and the line if it ended.
    fn push(&mut self, chunk: &[u8]) -> (usize, Option<String>) {
        let newline = chunk.iter().position(|&b| b == b'\n');
        let body = newline.unwrap_or(chunk.len());
        let room = MAX_LINE.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&chunk[..body.min(room)]);
        self.dropped += body.saturating_sub(room);
        match newline {
            Some(at) => (at + 1, self.take()),
            None => (body, None),
        }
    }

    /// The last line of a stream that did not end with a newline.
    fn finish(&mut self) -> Option<String> {
        if self.bytes.is_empty() && self.dropped == 0 {
            None
        } else {
            self.take()
        }
    }

    fn take(&mut self) -> Option<String> {
        let mut text = String::from_utf8_lossy(&self.bytes).into_owned();
        if self.dropped > 0 {
            text.push_str(&format!(
                " [line cut at {MAX_LINE} bytes: {} more dropped]",
                self.dropped
            ));
        }
        self.bytes.clear();
        self.dropped = 0;
        Some(text)
    }
}

fn emit_line(service: &Arc<str>, bus: &EventBus, tail: &Tail, stream: Stream, line: String) {
    {
        let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.clone());
    }
    bus.emit(service, EventKind::Output { stream, line });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_at_the_limit_and_the_rest_counted() {
        let mut line = LineBuffer::default();
        assert_eq!(line.push(b"short\nnext"), (6, Some("short".to_owned())));
        let big = vec![b'x'; MAX_LINE + 100];
        assert_eq!(line.push(&big), (big.len(), None));
        let (used, text) = line.push(b"yz\nrest");
        assert_eq!(used, 3);
        let text = text.unwrap();
        assert_eq!(
            text.len(),
            MAX_LINE + " [line cut at 65536 bytes: 102 more dropped]".len()
        );
        assert!(
            text.ends_with(" [line cut at 65536 bytes: 102 more dropped]"),
            "{}",
            &text[MAX_LINE..]
        );
        assert_eq!(line.finish(), None);
        line.push(b"tail without newline");
        assert_eq!(line.finish(), Some("tail without newline".to_owned()));
    }
}
