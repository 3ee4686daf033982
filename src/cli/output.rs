//! Standard output that never ends a command: `exposure-store ingest DIR |
//! head -1` must ingest every file, and `exposures | head` must not fail.
//!
//! Rust ignores `SIGPIPE`, so a reader that goes away turns into write
//! errors, and `println!` panics on them. Writes through [`Output`] never
//! fail: once the reader is gone (a broken pipe) the rest of the output is
//! dropped, as it would be by a process killed by `SIGPIPE`; any other
//! write error (a full disk behind a redirection) is kept, later output is
//! dropped too, and [`Output::finish`] returns it, so the command can
//! finish its work first and report it after.

use std::io::{self, ErrorKind, Write};

/// What became of the output.
#[derive(Debug)]
pub enum Delivery {
    /// Everything was written.
    Complete,
    /// The reader went away (broken pipe); the rest was dropped.
    ReaderGone,
}

/// A writer that records its first failure instead of returning it.
#[derive(Debug)]
pub struct Output<W: Write> {
    inner: W,
    reader_gone: bool,
    failed: Option<io::Error>,
}

impl Output<io::Stdout> {
    /// Standard output.
    pub fn stdout() -> Self {
        Self::new(io::stdout())
    }
}

impl<W: Write> Output<W> {
    /// Output to `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            reader_gone: false,
            failed: None,
        }
    }

    /// Whether output is still being written.
    fn open(&self) -> bool {
        !self.reader_gone && self.failed.is_none()
    }

    fn record(&mut self, e: io::Error) {
        if e.kind() == ErrorKind::BrokenPipe {
            self.reader_gone = true;
        } else if self.failed.is_none() {
            self.failed = Some(e);
        }
    }

    /// Flushes, and says whether everything reached the reader.
    ///
    /// # Errors
    /// The first write error other than a broken pipe.
    pub fn finish(mut self) -> io::Result<Delivery> {
        if self.open()
            && let Err(e) = self.inner.flush()
        {
            self.record(e);
        }
        match (self.failed, self.reader_gone) {
            (Some(e), _) => Err(e),
            (None, true) => Ok(Delivery::ReaderGone),
            (None, false) => Ok(Delivery::Complete),
        }
    }
}

impl<W: Write> Write for Output<W> {
    /// Writes `buf`, or drops it once the output has failed; never fails.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.open()
            && let Err(e) = self.inner.write_all(buf)
        {
            self.record(e);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.open()
            && let Err(e) = self.inner.flush()
        {
            self.record(e);
        }
        Ok(())
    }
}

/// Writes `message` and a newline to standard error, ignoring failure
/// (where `eprintln!` would panic: stderr closed, or a broken pipe).
pub fn warn(message: &str) {
    let _ = writeln!(io::stderr().lock(), "{message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader leaves after `capacity` bytes, or that fails
    /// with `kind` then.
    struct Closing {
        written: Vec<u8>,
        capacity: usize,
        kind: ErrorKind,
    }

    impl Write for Closing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.written.len() + buf.len() > self.capacity {
                return Err(io::Error::from(self.kind));
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn write_lines(kind: ErrorKind) -> (io::Result<Delivery>, usize) {
        let mut out = Output::new(Closing {
            written: Vec::new(),
            capacity: 10,
            kind,
        });
        let mut lines = 0;
        for _ in 0..5 {
            // Every write "succeeds": the caller's work goes on.
            if writeln!(out, "line").is_ok() {
                lines += 1;
            }
        }
        (out.finish(), lines)
    }

    #[test]
    fn a_reader_that_leaves_ends_the_output_not_the_command() {
        let (delivery, lines) = write_lines(ErrorKind::BrokenPipe);
        assert_eq!(lines, 5);
        assert!(matches!(delivery, Ok(Delivery::ReaderGone)));
    }

    #[test]
    fn other_write_errors_are_reported_at_the_end() {
        let (delivery, lines) = write_lines(ErrorKind::StorageFull);
        assert_eq!(lines, 5);
        assert!(delivery.is_err_and(|e| e.kind() == ErrorKind::StorageFull));
    }
}
