//! Ingesting NDJSON files.
//!
//! Each file is one unit of work: all of its events are ingested, or none
//! are and the file is recorded in `quarantined_files` with a precise reason.
//! A file is streamed, never read whole: a reader thread parses, validates
//! and prepares ([`ExposureRepository::prepare`]) chunks of lines while the
//! database applies the previous chunk,
//! with at most two parsed chunks waiting, so memory stays bounded whatever
//! the file's size.
//!
//! The format: one JSON object per line; blank lines, a UTF-8 byte order
//! mark and CRLF line ends are accepted. A line longer than
//! [`Limits::max_line_bytes`] rejects the file without reading the line
//! into memory.
//!
//! - `reader.rs`: the reader ([`NdjsonReader`], [`Limits`]);
//! - `rejection.rs`: why a file is rejected ([`Rejection`], [`ErrorType`]);
//! - here: the per-file pipeline ([`ingest_file`]) and its [`FileReport`].

mod reader;
mod rejection;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::json;

pub use self::reader::{DEFAULT_MAX_LINE_BYTES, Limits, NdjsonReader};
pub use self::rejection::{ErrorType, Rejection};
use crate::db::Database;
use crate::error::Error;
use crate::event::ExposureEvent;
use crate::repository::{ExposureRepository, IngestStats, PreparedChunk, QuarantineRecord};

/// Parsed chunks that may wait for the database at once.
const CHUNKS_IN_FLIGHT: usize = 2;

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

/// What the reader thread sends the database side: a chunk made ready
/// for it, or why the file stops.
type Message = Result<PreparedChunk, Stop>;

/// Reads `reader` in chunks of `chunk_size` events, prepares each
/// (`ExposureRepository::prepare`: keys and the record batch, here rather
/// than on the database's path) and sends them to the database side; a
/// rejection is sent in place of the chunk it stopped and ends the reading.
/// Stops early when the receiver is gone.
fn send_chunks<R: BufRead>(
    mut reader: NdjsonReader<R>,
    chunk_size: usize,
    prepare: impl Fn(Vec<ExposureEvent>) -> Result<PreparedChunk, Error>,
    progress: Option<&(dyn Fn(u64) + Send + Sync)>,
    tx: &tokio::sync::mpsc::Sender<Message>,
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
            Ok(_) if chunk.is_empty() => return,
            Ok(done) => (prepare(chunk).map_err(Stop::Database), done),
            Err(rejection) => (Err(Stop::Rejected(rejection)), true),
        };
        let failed = message.is_err();
        if tx.blocking_send(message).is_err() {
            return; // the database side stopped
        }
        if done || failed {
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
//
// Every log line of the file's work (chunks, commit, check, retry,
// recovery) carries its path; `events` is filled in when it is known.
#[tracing::instrument(name = "file", skip_all, fields(path = %path.display(), events))]
pub async fn ingest_file(
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
            return Ok(reported(FileReport {
                path: path.to_path_buf(),
                events_read,
                outcome: FileOutcome::Ingested { stats },
            }));
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
    Ok(reported(FileReport {
        path: path.to_path_buf(),
        events_read,
        outcome: FileOutcome::Quarantined { rejection },
    }))
}

/// `report`, its event count recorded on the file's span and its outcome
/// logged (`info`).
fn reported(report: FileReport) -> FileReport {
    tracing::Span::current().record("events", report.events_read);
    match &report.outcome {
        FileOutcome::Ingested { stats } => tracing::info!(
            inserted = stats.events_inserted,
            skipped = stats.events_skipped,
            "file ingested"
        ),
        FileOutcome::Quarantined { rejection } => tracing::info!(
            error_type = rejection.error_type.as_str(),
            "file quarantined"
        ),
    }
    report
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
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(CHUNKS_IN_FLIGHT);
            let chunk_size = repo.chunk_size();
            let engine = session.engine();
            let span = tracing::Span::current();
            let reader = tokio::task::spawn_blocking(move || {
                let _in_file = span.enter();
                let reader = NdjsonReader::new(BufReader::with_capacity(1 << 20, file), limits);
                let prepare = |events| repo.prepare(engine, events);
                send_chunks(reader, chunk_size, prepare, progress.as_deref(), &tx);
            });
            let mut ingestion = repo.ingestion(session).await?;
            while let Some(message) = rx.recv().await {
                let chunk = message?;
                events_read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                ingestion.push_prepared(chunk).await?;
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
