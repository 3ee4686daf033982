//! Ingesting NDJSON files.
//!
//! Each file is one unit of work: all of its events are ingested, or none
//! are and the file is recorded in `quarantined_files` with a precise reason.
//! A file is streamed, never read whole: a reader thread parses and
//! validates chunks of lines while the database applies the previous chunk,
//! with at most two parsed chunks waiting, so memory stays bounded whatever
//! the file's size.
//!
//! The format: one JSON object per line; blank lines, a UTF-8 byte order
//! mark and CRLF line ends are accepted. A line longer than
//! [`Limits::max_line_bytes`] rejects the file without reading the line
//! into memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::json;
use tracing::Instrument;

use crate::db::Database;
use crate::error::Error;
use crate::event::ExposureEvent;
use crate::repository::{ExposureRepository, IngestStats, QuarantineRecord};

/// Default cap on one line: generous for large raw payloads, small enough
/// that a runaway line cannot exhaust memory.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// The UTF-8 byte order mark, accepted at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parsed chunks that may wait for the database at once.
const CHUNKS_IN_FLIGHT: usize = 2;

/// Why a file was rejected, as stored in `quarantined_files.error_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// A line is not valid JSON.
    InvalidJson,
    /// A line is JSON but not a valid event (missing field, wrong type,
    /// unknown severity, bad timestamp, ...).
    InvalidEvent,
    /// The file is not UTF-8.
    InvalidEncoding,
    /// A line exceeds the line-length limit.
    LineTooLong,
    /// The file holds no events.
    EmptyFile,
    /// The file could not be read.
    IoError,
    /// The database refused the file's events.
    DatabaseError,
}

impl ErrorType {
    /// The stored name (`invalid_json`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidEvent => "invalid_event",
            Self::InvalidEncoding => "invalid_encoding",
            Self::LineTooLong => "line_too_long",
            Self::EmptyFile => "empty_file",
            Self::IoError => "io_error",
            Self::DatabaseError => "database_error",
        }
    }
}

/// A file's rejection: category, message, and details pointing at the
/// problem (line, column, field, reason).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// Category.
    pub error_type: ErrorType,
    /// Human-readable explanation, starting with the line when there is one.
    pub message: String,
    /// Machine-readable details.
    pub details: serde_json::Value,
}

impl Rejection {
    fn at_line(error_type: ErrorType, line: u64, reason: String, extra: serde_json::Value) -> Self {
        let reason = shortened(reason);
        let mut details = json!({ "line": line, "reason": reason });
        if let (Some(d), serde_json::Value::Object(extra)) = (details.as_object_mut(), extra) {
            d.extend(extra);
        }
        let field = details
            .get("field")
            .and_then(|f| f.as_str())
            .map(|f| format!(" field '{f}':"));
        Self {
            error_type,
            message: format!("line {line}:{} {reason}", field.unwrap_or_default()),
            details,
        }
    }

    fn io(path: &Path, e: &std::io::Error) -> Self {
        Self {
            error_type: ErrorType::IoError,
            message: format!("cannot read '{}': {e}", path.display()),
            details: json!({ "reason": e.to_string(), "kind": format!("{:?}", e.kind()) }),
        }
    }
}

/// Longest reason kept in a rejection, in characters: serde's messages
/// quote the offending value, which can be megabytes long.
const MAX_REASON_CHARS: usize = 300;

fn shortened(reason: String) -> String {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}... ({} bytes in all)", &reason[..cut], reason.len()),
        None => reason,
    }
}

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

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FileOutcome {
    /// All events of the file were ingested.
    Ingested {
        /// What the ingest did.
        stats: IngestStats,
    },
    /// Nothing of the file was ingested; it was recorded in the quarantine.
    Quarantined {
        /// Why.
        rejection: Rejection,
    },
}

/// The result of ingesting one file.
///
/// As JSON, `path` is the path as text (a byte that is not UTF-8 shown as
/// U+FFFD); such a path also gets `path_escaped`, its exact bytes with
/// non-ASCII bytes as `\xHH` (as in bash's `$'...'`).
#[derive(Debug, Clone, PartialEq)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// Events read from it (all of them when ingested).
    pub events_read: u64,
    /// Ingested or quarantined.
    pub outcome: FileOutcome,
}

impl Serialize for FileReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            path: std::borrow::Cow<'a, str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            path_escaped: Option<String>,
            events_read: u64,
            #[serde(flatten)]
            outcome: &'a FileOutcome,
        }
        Shown {
            path: self.path.to_string_lossy(),
            path_escaped: escaped_path(&self.path),
            events_read: self.events_read,
            outcome: &self.outcome,
        }
        .serialize(s)
    }
}

/// The exact bytes of a path that is not UTF-8, printable: ASCII as it is
/// (`\\`, quotes and control characters escaped), every other byte as
/// `\xHH`. `None` for a UTF-8 path (its text is exact).
#[must_use]
pub fn escaped_path(path: &Path) -> Option<String> {
    path.to_str().is_none().then(|| {
        path.as_os_str()
            .as_encoded_bytes()
            .escape_ascii()
            .to_string()
    })
}

/// Why the work of one file stopped.
enum Stop {
    Rejected(Rejection),
    Database(Error),
}

impl crate::Retryable for Stop {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Database(e) if crate::Retryable::is_retryable(e))
    }
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Self::Database(e)
    }
}

/// Reads `reader` in chunks of `chunk_size` events and sends them to the
/// database side; a rejection is sent in place of the chunk it stopped and
/// ends the reading. Stops early when the receiver is gone.
fn send_chunks<R: BufRead>(
    mut reader: NdjsonReader<R>,
    chunk_size: usize,
    progress: Option<&(dyn Fn(u64) + Send + Sync)>,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<ExposureEvent>, Rejection>>,
) {
    loop {
        let mut chunk = Vec::with_capacity(chunk_size.min(1 << 16));
        let read = loop {
            match reader.next_event() {
                Ok(Some(event)) => {
                    chunk.push(event);
                    if chunk.len() == chunk_size {
                        break Ok(false);
                    }
                }
                Ok(None) => break Ok(true),
                Err(rejection) => break Err(rejection),
            }
        };
        if let Some(progress) = progress {
            progress(reader.bytes_read());
        }
        let (message, done) = match read {
            Ok(done) => (Ok(chunk), done),
            Err(rejection) => (Err(rejection), true),
        };
        let empty = matches!(&message, Ok(c) if c.is_empty());
        if !empty && tx.blocking_send(message).is_err() {
            return; // the database side stopped
        }
        if done {
            return;
        }
    }
}

/// Progress callback: called with the bytes of the file consumed so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Ingests one NDJSON file as one unit of work; on any problem with the
/// file, rolls back and records it in the quarantine instead.
///
/// On DuckDB a file is reported ingested only after its commit and a check,
/// on a fresh connection, that the audit log holds exactly its new events.
/// When the DuckDB engine fails (a failed COMMIT, data corruption, an
/// internal or fatal error, or that check), nothing of the file is kept,
/// the instance is reopened from disk, and the file is tried once more; if
/// that fails too, the file is quarantined with `"retryable": true`.
///
/// # Errors
/// When the quarantine itself cannot be written, or the database became
/// unusable ([`Error::Unavailable`]: a failed instance could not be
/// reopened); every problem of the file is a [`FileOutcome::Quarantined`].
pub async fn ingest_file(
    db: &Database,
    repo: ExposureRepository,
    path: &Path,
    limits: Limits,
    progress: Option<Progress>,
) -> Result<FileReport, Error> {
    // Every log line of the file's work (chunks, commit, check, retry,
    // recovery) carries its path; `events` is filled in when it is known.
    let span = tracing::info_span!(
        "file",
        path = %path.display(),
        events = tracing::field::Empty
    );
    let report = ingest_file_in_span(db, repo, path, limits, progress)
        .instrument(span.clone())
        .await;
    if let Ok(report) = &report {
        span.record("events", report.events_read);
        span.in_scope(|| match &report.outcome {
            FileOutcome::Ingested { stats } => tracing::info!(
                inserted = stats.events_inserted,
                skipped = stats.events_skipped,
                "file ingested"
            ),
            FileOutcome::Quarantined { rejection } => tracing::info!(
                error_type = rejection.error_type.as_str(),
                "file quarantined"
            ),
        });
    }
    report
}

async fn ingest_file_in_span(
    db: &Database,
    repo: ExposureRepository,
    path: &Path,
    limits: Limits,
    progress: Option<Progress>,
) -> Result<FileReport, Error> {
    let (mut attempt, mut events_read) = attempt_file(db, repo, path, limits, &progress).await;
    if let Err(Stop::Database(Error::EngineFailed(first))) = &attempt {
        tracing::warn!(
            error = %first,
            "the database engine failed; trying the file once more on the reopened database"
        );
        let first = first_line(first).to_owned();
        (attempt, events_read) = attempt_file(db, repo, path, limits, &progress).await;
        if let Err(Stop::Database(Error::EngineFailed(again))) = &attempt {
            attempt = Err(Stop::Database(Error::EngineFailed(format!(
                "failed twice, the second time on a freshly reopened database; first: {first}; \
                 then: {}",
                first_line(again)
            ))));
        }
    }
    let rejection = match attempt {
        Ok(stats) => {
            return Ok(FileReport {
                path: path.to_path_buf(),
                events_read,
                outcome: FileOutcome::Ingested { stats },
            });
        }
        Err(Stop::Rejected(rejection)) => rejection,
        Err(Stop::Database(e @ Error::Unavailable(_))) => return Err(e),
        Err(Stop::Database(e)) => Rejection {
            error_type: ErrorType::DatabaseError,
            message: e.to_string(),
            details: json!({ "reason": e.to_string(), "retryable": e.is_retryable() }),
        },
    };
    let mut details = rejection.details.clone();
    if let (Some(escaped), serde_json::Value::Object(map)) = (escaped_path(path), &mut details) {
        // The file name is stored as text; its exact bytes go here.
        map.insert("path_escaped".to_owned(), escaped.into());
    }
    let record = QuarantineRecord {
        filename: path.to_string_lossy().into_owned(),
        error_type: rejection.error_type.as_str().to_owned(),
        error_message: rejection.message.clone(),
        error_details_json: Some(details),
    };
    repo.quarantine_file(db, record).await?;
    Ok(FileReport {
        path: path.to_path_buf(),
        events_read,
        outcome: FileOutcome::Quarantined { rejection },
    })
}

/// The first line of an error message (DuckDB appends paragraphs of
/// advice).
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default()
}

/// One attempt at a file: its unit of work (run again after a conflict, on
/// PostgreSQL) and, on DuckDB, the check of what the commit stored, all in
/// one writing turn. Returns the outcome and the events read.
async fn attempt_file(
    db: &Database,
    repo: ExposureRepository,
    path: &Path,
    limits: Limits,
    progress: &Option<Progress>,
) -> (Result<IngestStats, Stop>, u64) {
    let events_read = AtomicU64::new(0);
    let turn = db.write_turn().await;
    // On PostgreSQL a concurrent ingest of the same keys can deadlock with
    // this one; the file is then read again from the start.
    let committed = crate::retry_conflicts(|| {
        events_read.store(0, Ordering::Relaxed);
        let progress = progress.clone();
        let events_read = &events_read;
        let work = async move |session: &crate::db::Session| -> Result<_, Stop> {
            let file = File::open(path).map_err(|e| Stop::Rejected(Rejection::io(path, &e)))?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<ExposureEvent>, Rejection>>(
                CHUNKS_IN_FLIGHT,
            );
            let chunk_size = repo.chunk_size();
            let span = tracing::Span::current();
            let reader = tokio::task::spawn_blocking(move || {
                let _in_file = span.enter();
                let reader = NdjsonReader::new(BufReader::with_capacity(1 << 20, file), limits);
                send_chunks(reader, chunk_size, progress.as_deref(), &tx);
            });
            let mut ingestion = repo.ingestion(session).await?;
            while let Some(message) = rx.recv().await {
                let chunk = message.map_err(Stop::Rejected)?;
                events_read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                ingestion.push_owned(chunk).await?;
            }
            reader
                .await
                .map_err(|e| Error::Internal(format!("file reader failed: {e}")))?;
            if events_read.load(Ordering::Relaxed) == 0 {
                return Err(Stop::Rejected(Rejection {
                    error_type: ErrorType::EmptyFile,
                    message: "the file holds no events".to_owned(),
                    details: json!({ "reason": "no non-blank line" }),
                }));
            }
            Ok(ingestion.finish_checked().await?)
        };
        let turn = turn.as_ref();
        async move {
            match turn {
                Some(turn) => db.transaction_in_turn(turn, work).await,
                None => db.transaction(work).await,
            }
        }
    })
    .await;
    let outcome = match committed {
        Ok((stats, Some(appended))) => repo
            .check_appended(db, appended)
            .await
            .map(|()| stats)
            .map_err(Stop::Database),
        Ok((stats, None)) => Ok(stats),
        Err(stop) => Err(stop),
    };
    (outcome, events_read.into_inner())
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
