//! The NDJSON reader: lines cut with bounded memory, checked for length
//! and encoding, parsed and validated into events.

use std::io::{BufRead, Read};

use serde_json::json;

use super::rejection::{ErrorType, Rejection};
use crate::event::ExposureEvent;

/// Default cap on one line: generous for large raw payloads, small enough
/// that a runaway line cannot exhaust memory.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// The UTF-8 byte order mark, accepted at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reading limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted line, in bytes of its content: a line end (LF or
    /// CRLF) and the byte order mark of a first line do not count.
    pub max_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// Reads events from NDJSON, one line at a time, with bounded memory.
#[derive(Debug)]
pub struct NdjsonReader<R> {
    inner: R,
    limits: Limits,
    line: u64,
    buf: Vec<u8>,
    bytes: u64,
}

impl<R: BufRead> NdjsonReader<R> {
    /// A reader over `inner`.
    pub fn new(inner: R, limits: Limits) -> Self {
        Self {
            inner,
            limits,
            line: 0,
            buf: Vec::new(),
            bytes: 0,
        }
    }

    /// Bytes consumed so far.
    #[must_use]
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// The next event, `None` at the end of the input.
    ///
    /// # Errors
    /// The [`Rejection`] of the first line that is not a valid event, or of
    /// a read error.
    pub fn next_event(&mut self) -> Result<Option<ExposureEvent>, Rejection> {
        loop {
            self.buf.clear();
            // The limit is on the line's content: room for a byte order
            // mark, CR and LF besides, and one byte more to see a line too
            // long without reading it whole.
            let cap = u64::try_from(self.limits.max_line_bytes)
                .unwrap_or(u64::MAX)
                .saturating_add(BOM.len() as u64 + 3);
            let n = (&mut self.inner)
                .take(cap)
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| Rejection {
                    error_type: ErrorType::IoError,
                    message: format!("line {}: read failed: {e}", self.line + 1),
                    details: json!({ "line": self.line + 1, "reason": e.to_string() }),
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.bytes += n as u64;
            self.line += 1;
            let line = self.line;
            let mut bytes = self.buf.as_slice();
            bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
            bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            if line == 1 {
                bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
            }
            if bytes.len() > self.limits.max_line_bytes {
                return Err(Rejection::at_line(
                    ErrorType::LineTooLong,
                    line,
                    format!(
                        "line is longer than the limit of {} bytes",
                        self.limits.max_line_bytes
                    ),
                    json!({ "limit_bytes": self.limits.max_line_bytes }),
                ));
            }
            let text = std::str::from_utf8(bytes).map_err(|e| {
                Rejection::at_line(
                    ErrorType::InvalidEncoding,
                    line,
                    format!(
                        "not UTF-8 (invalid byte at offset {} of the line)",
                        e.valid_up_to()
                    ),
                    json!({ "byte_offset": e.valid_up_to() }),
                )
            })?;
            if text.trim().is_empty() {
                continue;
            }
            return parse_line(text, line).map(Some);
        }
    }
}

/// Parses and validates one non-blank line.
fn parse_line(text: &str, line: u64) -> Result<ExposureEvent, Rejection> {
    // The fast path; a line that fails is parsed again, tracking the path
    // of the value being read, for a rejection that names the field.
    let event = match serde_json::from_str::<ExposureEvent>(text) {
        Ok(event) => event,
        Err(_) => diagnose(text, line)?,
    };
    event.validate().map_err(|invalid| {
        Rejection::at_line(
            ErrorType::InvalidEvent,
            line,
            invalid.reason,
            json!({ "field": invalid.field }),
        )
    })?;
    Ok(event)
}

/// Parses a line that failed to parse, for its rejection (or the event, if
/// the second parse disagrees: it cannot, but the event is then fine).
fn diagnose(text: &str, line: u64) -> Result<ExposureEvent, Rejection> {
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed: Result<ExposureEvent, _> = serde_path_to_error::deserialize(&mut de);
    let event = match parsed {
        Ok(event) => {
            de.end().map_err(|e| json_rejection(&e, line))?;
            event
        }
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if !matches!(inner.classify(), serde_json::error::Category::Data) {
                return Err(json_rejection(&inner, line));
            }
            let reason = without_position(&inner);
            let field = if path == "." {
                missing_field(&reason)
            } else {
                Some(path)
            };
            return Err(Rejection::at_line(
                ErrorType::InvalidEvent,
                line,
                reason,
                json!({ "field": field, "column": inner.column() }),
            ));
        }
    };
    Ok(event)
}

fn json_rejection(e: &serde_json::Error, line: u64) -> Rejection {
    Rejection::at_line(
        ErrorType::InvalidJson,
        line,
        without_position(e),
        json!({ "column": e.column() }),
    )
}

/// serde_json's message without its " at line L column C" suffix (the line
/// number it knows is always 1: each line is parsed on its own).
fn without_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match message.rsplit_once(" at line ") {
        Some((head, _)) => head.to_owned(),
        None => message,
    }
}

/// The field named in serde's "missing field `x`".
fn missing_field(reason: &str) -> Option<String> {
    let rest = reason.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(field, _)| field.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], max_line_bytes: usize) -> Result<Vec<ExposureEvent>, Rejection> {
        let mut reader = NdjsonReader::new(input, Limits { max_line_bytes });
        let mut out = Vec::new();
        while let Some(e) = reader.next_event()? {
            out.push(e);
        }
        Ok(out)
    }

    const LINE: &str = r#"{"event_id":"e1","timestamp":"2025-01-05T16:00:03Z","office_id":"o","asset_id":"a","exposure_id":"x","exposure_class":"c","event_action":"opened","status":"open","severity":"low","risk_score":1.5}"#;

    #[test]
    fn bom_crlf_and_blank_lines_are_fine() {
        let input = format!(
            "\u{feff}{LINE}\r\n\r\n   \n{}\r\n",
            LINE.replace("e1", "e2")
        );
        let events = read_all(input.as_bytes(), 1 << 20).unwrap_or_default();
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn rejections_point_at_line_and_field() {
        let bad = format!("{LINE}\n{}\n", LINE.replace("\"low\"", "\"urgent\""));
        let r = read_all(bad.as_bytes(), 1 << 20).err();
        let r = r.as_ref();
        assert_eq!(r.map(|r| r.error_type), Some(ErrorType::InvalidEvent));
        assert_eq!(r.map(|r| r.details["line"].clone()), Some(json!(2)));
        assert_eq!(
            r.map(|r| r.details["field"].clone()),
            Some(json!("severity"))
        );

        let missing = LINE.replace(r#","risk_score":1.5"#, "");
        let r = read_all(missing.as_bytes(), 1 << 20).err();
        assert_eq!(
            r.map(|r| r.details["field"].clone()),
            Some(json!("risk_score"))
        );

        let r = read_all(b"{\"event_id\": \n", 1 << 20).err();
        assert_eq!(r.map(|r| r.error_type), Some(ErrorType::InvalidJson));

        let r = read_all(format!("{LINE} trailing").as_bytes(), 1 << 20).err();
        assert_eq!(r.map(|r| r.error_type), Some(ErrorType::InvalidJson));
    }

    #[test]
    fn a_huge_bad_value_does_not_make_a_huge_reason() {
        let huge = LINE.replace("1.5", &format!("\"{}\"", "9".repeat(1 << 20)));
        let r = read_all(huge.as_bytes(), 4 << 20).err();
        assert_eq!(
            r.as_ref().map(|r| r.error_type),
            Some(ErrorType::InvalidEvent)
        );
        assert!(r.is_some_and(|r| r.message.len() < 1_000 && r.details["field"] == "risk_score"));
    }

    #[test]
    fn the_line_limit_counts_the_content_whatever_the_line_end() {
        let n = LINE.len();
        for (name, input) in [
            ("LF", format!("{LINE}\n")),
            ("CRLF", format!("{LINE}\r\n")),
            ("BOM", format!("\u{feff}{LINE}\n")),
            ("BOM, CRLF", format!("\u{feff}{LINE}\r\n")),
            ("no end", LINE.to_owned()),
            (
                "second line",
                format!("{LINE}\r\n{}\r\n", LINE.replace("e1", "e2")),
            ),
        ] {
            let at_limit = read_all(input.as_bytes(), n)
                .map(|e| e.len())
                .map_err(|r| r.message);
            assert!(at_limit.is_ok_and(|n| n >= 1), "{name} at the limit");
            let below = read_all(input.as_bytes(), n - 1)
                .err()
                .map(|r| r.error_type);
            assert_eq!(below, Some(ErrorType::LineTooLong), "{name} one byte over");
        }
        // A BOM counts anywhere but at the start of the file.
        let later_bom = format!("{LINE}\n\u{feff}{}\n", LINE.replace("e1", "e2"));
        let r = read_all(later_bom.as_bytes(), n)
            .err()
            .map(|r| r.error_type);
        assert_eq!(r, Some(ErrorType::LineTooLong));
    }

    #[test]
    fn long_lines_and_bad_bytes_are_rejected() {
        let r = read_all(LINE.as_bytes(), 50).err();
        assert_eq!(r.map(|r| r.error_type), Some(ErrorType::LineTooLong));
        let mut latin1 = LINE.as_bytes().to_vec();
        latin1[20] = 0xE9;
        let r = read_all(&latin1, 1 << 20).err();
        assert_eq!(r.map(|r| r.error_type), Some(ErrorType::InvalidEncoding));
    }
}
