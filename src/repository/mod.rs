//! The repository: ingesting events, the quarantine, and dashboard queries.
//!
//! [`ExposureRepository::ingest_events`] runs inside a unit of work
//! ([`Session`]), so a whole call is one transaction: all of it or none of
//! it. The rules (`fold.rs`) and every statement (`statements.rs`, built
//! with sea-query) are the same on both engines; what differs is how rows
//! reach the database in bulk.
//!
//! Per chunk of events, an ingest
//!
//! 1. appends the events whose ids it has not appended yet to
//!    `exposure_events`. On DuckDB, where the log has no index (see
//!    `append.rs`), it remembers the appended ids by a 64-bit key and
//!    appends Arrow record batches with the Appender; the ids are looked up
//!    among the stored ones once, when the call ends, and events stored
//!    already are then taken out again. The keys and the record batch are
//!    made by [`ExposureRepository::prepare`], which a file's reader thread
//!    calls, and the append runs while the chunk is folded and the next
//!    one admitted: the database's thread only appends. On PostgreSQL, where other
//!    processes write at the same time, `INSERT ... ON CONFLICT (event_id)
//!    DO NOTHING RETURNING event_id` (multi-row statements) says which were
//!    new, even when another writer stores the same event concurrently;
//! 2. folds the new events into one row per key (`fold.rs`): no read of the
//!    stored state is needed, because the current state is a function of
//!    the stored events and the fold of a batch merges into it in any order.
//!
//! When the call ends, the folded rows are staged once and merged into
//! `exposures_current` with one `INSERT ... SELECT ... ON CONFLICT
//! (office_id, exposure_id) DO UPDATE SET ...` that compares provenance
//! (`statements::upsert_current`): each key is written once per call, in
//! place. (DuckDB merges a batch of up to 20,000 keys by the same rule in
//! a few statements that read and write less: see
//! `duckdb_writer::merge_small`.) Concurrent PostgreSQL writers need no
//! locks beyond the row locks of that statement. (On DuckDB, `exposures_current` has no secondary
//! index, so the update changes no indexed column: see migration
//! `m20261128_000004_drop_current_indexes_on_duckdb`.)
//!
//! This file holds the engine-neutral part of writing (the fold, the
//! counts, an ingestion's lifetime); each engine's part is in a file of its
//! own, `duckdb_writer.rs` and `postgres_writer.rs`, behind one `Writer`
//! chosen when a call starts. `state.rs` computes the same state from the
//! log with one set-based statement, for [`ExposureRepository::verify`] and
//! [`ExposureRepository::rebuild`]. `queries.rs` holds the quarantine and
//! the dashboard queries, `types.rs` the public value types.

mod append;
mod check;
mod columns;
mod duckdb_writer;
mod fold;
mod postgres_writer;
mod queries;
mod stage;
mod state;
mod statements;
mod types;

pub use append::event_key;
pub use check::Appended;
pub(crate) use state::lacks_provenance;
pub use state::{Difference, DifferenceKind, RebuildReport, VerifyReport};
pub use types::{
    ExposureCounts, ExposureFilter, IngestStats, InsertedEvents, Page, QuarantineRecord, Totals,
    UpsertedExposures,
};

use duckdb::arrow::record_batch::RecordBatch;
use infra::Engine;

use self::duckdb_writer::DuckDbWriter;
use self::fold::Folder;
use self::postgres_writer::PostgresWriter;
use crate::db::Session;
use crate::error::{Error, Result};
use crate::event::ExposureEvent;

/// Events per chunk unless configured otherwise (see the README's
/// performance section for the measurements behind it).
pub const DEFAULT_CHUNK_SIZE: usize = 25_000;

/// A chunk of events made ready for [`Ingestion::push_prepared`] by
/// [`ExposureRepository::prepare`].
#[derive(Debug)]
pub struct PreparedChunk {
    events: Vec<ExposureEvent>,
    /// DuckDB: each event's key, in order (empty on PostgreSQL).
    keys: Vec<u64>,
    /// DuckDB: the events as the Appender's record batch.
    batch: Option<RecordBatch>,
}

impl PreparedChunk {
    /// Events in the chunk.
    #[must_use]
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the chunk holds no event.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// Ingests `events` in one call with the default chunk size; see
/// [`ExposureRepository::ingest_events`].
///
/// # Errors
/// As [`ExposureRepository::ingest_events`].
pub async fn ingest_events(session: &Session, events: &[ExposureEvent]) -> Result<IngestStats> {
    ExposureRepository::default()
        .ingest_events(session, events)
        .await
}

/// Reads and writes exposure data. Cheap to create; holds only settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExposureRepository {
    chunk_size: usize,
}

impl Default for ExposureRepository {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

impl ExposureRepository {
    /// A repository that stages and upserts `chunk_size` events at a time
    /// (at least 1).
    #[must_use]
    pub fn with_chunk_size(chunk_size: usize) -> Self {
        Self {
            chunk_size: chunk_size.max(1),
        }
    }

    /// Events per chunk.
    #[must_use]
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Appends new events to the audit log and applies them to the current
    /// state, in chunks, inside the session's transaction. Events whose id
    /// is already stored, or that repeat an id earlier in `events`, are
    /// skipped and do not touch the current state.
    ///
    /// # Errors
    /// The database's error; the caller's unit of work then rolls back, so
    /// neither table changes.
    pub async fn ingest_events(
        &self,
        session: &Session,
        events: &[ExposureEvent],
    ) -> Result<IngestStats> {
        let mut ingestion = self.ingestion(session).await?;
        ingestion.push(events).await?;
        ingestion.finish().await
    }

    /// Starts an ingest that can be fed in pieces (for example while a
    /// large file is read) and is completed by [`Ingestion::finish`]; the
    /// pieces together behave as one call of
    /// [`ExposureRepository::ingest_events`].
    ///
    /// On DuckDB the unit of work first takes this process's write turn,
    /// unless it has it already, and keeps it until it ends (see
    /// [`Database::write_transaction`](crate::Database::write_transaction)).
    ///
    /// # Errors
    /// The database's error while preparing the staging tables.
    pub async fn ingestion<'s>(&self, session: &'s Session) -> Result<Ingestion<'s>> {
        let mut writer = Writer::of(session);
        writer.start_appending().await?;
        Ok(Ingestion {
            repo: *self,
            session,
            writer,
            folder: Folder::default(),
            stats: IngestStats::default(),
            finished: false,
        })
    }

    /// Does the work of ingesting `events` that needs no database, for
    /// [`Ingestion::push_prepared`]: each event's 64-bit key and, on
    /// DuckDB, the Arrow record batch the Appender takes. Runs on the
    /// calling thread, so a reader can prepare the next chunk while the
    /// database appends this one.
    ///
    /// # Errors
    /// [`Error::Internal`] if the record batch cannot be built (a bug).
    pub fn prepare(&self, engine: Engine, events: Vec<ExposureEvent>) -> Result<PreparedChunk> {
        let (keys, batch) = match engine {
            Engine::DuckDb => {
                let keys: Vec<u64> = events.iter().map(|e| event_key(&e.event_id)).collect();
                let batch = columns::events(&events, &keys)?;
                (keys, Some(batch))
            }
            Engine::Postgres => (Vec::new(), None),
        };
        Ok(PreparedChunk {
            events,
            keys,
            batch,
        })
    }

    /// Appends the events whose ids are not stored yet (nor repeated earlier
    /// in `events`) to `exposure_events`. Does not touch the current state.
    ///
    /// # Errors
    /// The database's error.
    pub async fn batch_insert_events(
        &self,
        session: &Session,
        events: &[ExposureEvent],
    ) -> Result<InsertedEvents> {
        let mut writer = Writer::of(session);
        writer.start_appending().await?;
        let inserted = writer.insert_events(*self, events).await?;
        writer.drop_staging().await?;
        Ok(inserted)
    }

    /// Merges `events` into `exposures_current` (whether or not they are in
    /// the audit log), with the rules of the module docs. Applying events
    /// that are not in the log makes the current state differ from the
    /// log's ([`ExposureRepository::verify`] reports it).
    ///
    /// # Errors
    /// The database's error.
    pub async fn batch_upsert_current(
        &self,
        session: &Session,
        events: &[ExposureEvent],
    ) -> Result<UpsertedExposures> {
        let writer = Writer::of(session);
        writer.create_staging().await?;
        let mut folder = Folder::default();
        for e in events {
            folder.push(e.clone());
        }
        let upserted = writer.upsert_folded(folder).await?;
        writer.drop_staging().await?;
        Ok(upserted)
    }

    /// Checks, after the commit of an ingestion, that the audit log holds
    /// exactly what it appended (see [`Ingestion::finish_checked`]): read on
    /// a fresh connection, the log grew by exactly the appended events, and
    /// the rows it grew by are the appended ids. A no-op on PostgreSQL.
    ///
    /// # Errors
    /// [`Error::EngineFailed`] when they differ (the DuckDB instance is then
    /// reopened from disk before its next use), or the database's error.
    pub async fn check_appended(&self, db: &crate::Database, appended: Appended) -> Result<()> {
        check::check_appended(db, appended).await
    }

    /// Checks the database against the rules, inside the session (one
    /// snapshot): reads every value of every table (a damaged block fails
    /// here, not in a dashboard), looks for event ids and current keys
    /// stored twice, and recomputes the current state from the audit log
    /// with one set-based statement, reporting every key that differs.
    ///
    /// # Errors
    /// The database's error, for example a damaged block it could not read.
    pub async fn verify(&self, session: &Session) -> Result<VerifyReport> {
        state::verify(session).await
    }

    /// Replaces what differs in `exposures_current` with the state computed
    /// from the audit log, inside the session's unit of work: keys that
    /// differ are updated in place, missing ones inserted, keys without
    /// events removed. Returns what it changed (nothing on a database that
    /// [`ExposureRepository::verify`] finds clean).
    ///
    /// # Errors
    /// The database's error; the unit of work must then be rolled back.
    pub async fn rebuild(&self, session: &Session) -> Result<RebuildReport> {
        state::rebuild(session).await
    }
}

/// An ingest fed in pieces; see [`ExposureRepository::ingestion`].
///
/// Its events go to the audit log as they are pushed (on DuckDB a chunk's
/// append runs as a task of its own while the next chunk is read, and the
/// next push or `finish` waits for it), but the current state is written by
/// [`Ingestion::finish`]. Dropping an ingestion
/// that was fed events without finishing it makes its unit of work refuse
/// to commit, so the two tables cannot disagree.
#[derive(Debug)]
#[must_use = "call finish() to write the current state"]
pub struct Ingestion<'s> {
    repo: ExposureRepository,
    session: &'s Session,
    /// The engine's half of the work.
    writer: Writer<'s>,
    /// The current state of every key touched so far, written by `finish`.
    folder: Folder,
    stats: IngestStats,
    finished: bool,
}

impl Drop for Ingestion<'_> {
    fn drop(&mut self) {
        if !self.finished && self.stats.events_inserted > 0 {
            self.session.poison(
                "an ingestion was dropped without finish(): its events are in the audit log \
                 but not in the current state, so the unit of work is not committed",
            );
        }
    }
}

impl Ingestion<'_> {
    /// Appends the next piece of events to the audit log (in chunks of the
    /// repository's size) and folds the new ones into the current state.
    ///
    /// # Errors
    /// The database's error; the unit of work must then be rolled back
    /// (returning the error from the work does that).
    pub async fn push(&mut self, events: &[ExposureEvent]) -> Result<()> {
        self.push_owned(events.to_vec()).await
    }

    /// As [`Ingestion::push`], taking the events (which saves a copy on
    /// DuckDB, where they move to the Appender).
    ///
    /// # Errors
    /// As [`Ingestion::push`].
    pub async fn push_owned(&mut self, events: Vec<ExposureEvent>) -> Result<()> {
        let chunk = self.repo.prepare(self.session.engine(), events)?;
        self.push_prepared(chunk).await
    }

    /// As [`Ingestion::push`], for a chunk made by
    /// [`ExposureRepository::prepare`] (on another thread, for example).
    ///
    /// # Errors
    /// As [`Ingestion::push`].
    pub async fn push_prepared(&mut self, chunk: PreparedChunk) -> Result<()> {
        self.writer
            .push(
                chunk,
                self.repo.chunk_size,
                &mut self.stats,
                &mut self.folder,
            )
            .await
    }

    /// Writes the current state of every key touched and returns what the
    /// whole ingest did.
    ///
    /// # Errors
    /// The database's error (roll the unit of work back).
    pub async fn finish(self) -> Result<IngestStats> {
        Ok(self.finish_checked().await?.0)
    }

    /// As [`Ingestion::finish`], also returning what was appended to the
    /// audit log, for [`ExposureRepository::check_appended`] after the
    /// commit (DuckDB; `None` on PostgreSQL).
    ///
    /// On DuckDB this is when the appended ids are looked up among the
    /// stored ones (see `append.rs`). If some were stored already, their
    /// rows are removed from the log again, they count as skipped, and the
    /// current state is computed from the rows this ingestion kept, with one
    /// set-based statement, instead of from the fold.
    ///
    /// # Errors
    /// As [`Ingestion::finish`].
    pub async fn finish_checked(mut self) -> Result<(IngestStats, Option<Appended>)> {
        let started = std::time::Instant::now();
        let folder = std::mem::take(&mut self.folder);
        let (upserted, appended) = self.writer.finish(folder, &mut self.stats).await?;
        self.writer.drop_staging().await?;
        self.finished = true;
        tracing::debug!(
            inserted = upserted.inserted,
            updated = upserted.updated,
            ms = started.elapsed().as_millis(),
            "current state written"
        );
        let stats = IngestStats {
            exposures_inserted: upserted.inserted,
            exposures_updated: upserted.updated,
            ..self.stats
        };
        Ok((stats, appended))
    }
}

/// The engine's half of a call that writes events, chosen once, when the
/// call starts: DuckDB appends to the audit log with the Appender and looks
/// the ids up when the call ends (`duckdb_writer.rs`), PostgreSQL inserts
/// what is new (`postgres_writer.rs`).
#[derive(Debug)]
enum Writer<'s> {
    /// Boxed: it holds the log's bookkeeping, PostgreSQL's only the session.
    DuckDb(Box<DuckDbWriter<'s>>),
    Postgres(PostgresWriter<'s>),
}

impl<'s> Writer<'s> {
    /// The writer of `session`'s engine.
    fn of(session: &'s Session) -> Self {
        match session.duckdb() {
            Some(duckdb) => Self::DuckDb(Box::new(DuckDbWriter::new(session, duckdb))),
            None => Self::Postgres(PostgresWriter::new(session)),
        }
    }

    /// Creates the staging tables ([`Writer::drop_staging`] drops them).
    async fn create_staging(&self) -> Result<()> {
        match self {
            Self::DuckDb(w) => w.create_staging().await,
            Self::Postgres(w) => w.create_staging().await,
        }
    }

    /// Prepares the unit of work to write events: creates the staging
    /// tables and, on DuckDB, takes the write turn and starts a
    /// [`LogAppend`](append::LogAppend).
    async fn start_appending(&mut self) -> Result<()> {
        match self {
            Self::DuckDb(w) => w.start_appending().await,
            Self::Postgres(w) => w.create_staging().await,
        }
    }

    /// Writes the new events of `chunk` to the audit log (PostgreSQL: in
    /// chunks of `chunk_size`), counts them in `stats` and folds them into
    /// `folder`.
    async fn push(
        &mut self,
        chunk: PreparedChunk,
        chunk_size: usize,
        stats: &mut IngestStats,
        folder: &mut Folder,
    ) -> Result<()> {
        match self {
            Self::DuckDb(w) => w.push(chunk, stats, folder).await,
            Self::Postgres(w) => w.push(chunk.events, chunk_size, stats, folder).await,
        }
    }

    /// Writes the current state of the keys in `folder` at the end of an
    /// ingestion; returns what it wrote and (DuckDB) what was appended to
    /// the audit log.
    async fn finish(
        &mut self,
        folder: Folder,
        stats: &mut IngestStats,
    ) -> Result<(UpsertedExposures, Option<Appended>)> {
        match self {
            Self::DuckDb(w) => {
                let (upserted, appended) = w.finish(folder, stats).await?;
                Ok((upserted, Some(appended)))
            }
            Self::Postgres(w) => Ok((w.upsert_folded(folder.finish()).await?, None)),
        }
    }

    /// [`ExposureRepository::batch_insert_events`], in `repo`'s chunks.
    async fn insert_events(
        &mut self,
        repo: ExposureRepository,
        events: &[ExposureEvent],
    ) -> Result<InsertedEvents> {
        match self {
            Self::DuckDb(w) => w.insert_events(repo, events).await,
            Self::Postgres(w) => w.insert_events(repo.chunk_size, events).await,
        }
    }

    /// Drops the staging tables at the end of a call.
    async fn drop_staging(&self) -> Result<()> {
        match self {
            Self::DuckDb(w) => w.drop_staging().await,
            Self::Postgres(w) => w.drop_staging().await,
        }
    }

    /// Stages the rows of `folder` and merges them into `exposures_current`.
    async fn upsert_folded(&self, folder: Folder) -> Result<UpsertedExposures> {
        match self {
            Self::DuckDb(w) => {
                w.upsert_folded(duckdb_writer::ready_to_stage(folder)?)
                    .await
            }
            Self::Postgres(w) => w.upsert_folded(folder.finish()).await,
        }
    }
}

/// A statement that could not be built: a bug, not a database error.
fn internal(e: sea_query::error::Error) -> Error {
    Error::Internal(e.to_string())
}
