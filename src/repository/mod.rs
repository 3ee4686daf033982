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
//! place. Concurrent PostgreSQL writers need no locks beyond the row locks
//! of that statement. (On DuckDB, `exposures_current` has no secondary
//! index, so the update changes no indexed column: see migration
//! `m20261128_000004_drop_current_indexes_on_duckdb`.)
//!
//! `state.rs` computes the same state from the log with one set-based
//! statement, for [`ExposureRepository::verify`] and
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
use sea_orm::ConnectionTrait;

use self::append::LogAppend;
use self::duckdb_writer::{append_to_log, log_new_events, spawn_append};
use self::fold::Folder;
use self::postgres_writer::{insert_chunk, stage_rows};
use self::statements::{StageCurrent, StageIds, StageKeys};
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
        let log = start_appending(session).await?;
        let transaction = match session.duckdb() {
            Some(duckdb) => duckdb.transaction().await?,
            None => None,
        };
        Ok(Ingestion {
            repo: *self,
            session,
            folder: Folder::default(),
            log,
            appending: None,
            transaction,
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
        let Some(mut log) = start_appending(session).await? else {
            let mut out = InsertedEvents::default();
            let mut offset = 0;
            for chunk in events.chunks(self.chunk_size) {
                let new = insert_chunk(session, chunk).await?;
                out.inserted += new.len() as u64;
                out.skipped += (chunk.len() - new.len()) as u64;
                out.new_positions
                    .extend(new.into_iter().map(|i| offset + i));
                offset += chunk.len();
            }
            drop_staging(session).await?;
            return Ok(out);
        };
        let mut new_positions = Vec::new();
        for (offset, chunk) in (0..)
            .step_by(self.chunk_size)
            .zip(events.chunks(self.chunk_size))
        {
            let new = log_new_events(&mut log, self.prepare(Engine::DuckDb, chunk.to_vec())?);
            new_positions.extend(new.positions.iter().map(|i| offset + i));
            append_to_log(session, new.into_parts()?.0).await?;
        }
        let repeats = log.stored_before(session).await?;
        log.remove(session, &repeats).await?;
        new_positions.retain(|&i| {
            events
                .get(i)
                .is_some_and(|e| !repeats.contains(&e.event_id))
        });
        drop_staging(session).await?;
        let inserted = new_positions.len();
        Ok(InsertedEvents {
            inserted: inserted as u64,
            skipped: (events.len() - inserted) as u64,
            new_positions,
        })
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
        create_staging(session).await?;
        let mut folder = Folder::default();
        for e in events {
            folder.push(e.clone());
        }
        let upserted = upsert_folded(session, ready_to_stage(session.engine(), folder)?).await?;
        drop_staging(session).await?;
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
    /// The current state of every key touched so far, written by `finish`.
    folder: Folder,
    /// DuckDB: what was appended to the audit log (looked up against the
    /// stored log by `finish`, and checked after the commit).
    log: Option<LogAppend>,
    /// DuckDB: the append of the last chunk pushed, still running.
    appending: Option<tokio::task::JoinHandle<Result<()>>>,
    /// DuckDB: the unit of work's transaction, the only one the appends
    /// may run in (an append still queued when the ingestion is dropped
    /// and rolled back must not run in autocommit or in the next one).
    transaction: Option<duckdb_adapter::Transaction>,
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

    /// PostgreSQL's [`Ingestion::push`]: per chunk, the insert says which
    /// events are new.
    async fn push_postgres(&mut self, events: Vec<ExposureEvent>) -> Result<()> {
        let mut events = events.into_iter();
        loop {
            let chunk: Vec<ExposureEvent> = events.by_ref().take(self.repo.chunk_size).collect();
            if chunk.is_empty() {
                return Ok(());
            }
            let started = std::time::Instant::now();
            let new = insert_chunk(self.session, &chunk).await?;
            self.stats.events_inserted += new.len() as u64;
            self.stats.events_skipped += (chunk.len() - new.len()) as u64;
            let read = chunk.len();
            let mut new_positions = new.iter().copied().peekable();
            for (i, e) in chunk.into_iter().enumerate() {
                if new_positions.next_if_eq(&i).is_some() {
                    self.folder.push(e);
                }
            }
            tracing::debug!(
                events = read,
                new = new.len(),
                ms = started.elapsed().as_millis(),
                "chunk ingested"
            );
        }
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
        let Some(log) = &mut self.log else {
            return self.push_postgres(chunk.events).await;
        };
        let started = std::time::Instant::now();
        let read = chunk.len();
        let new = log_new_events(log, chunk);
        self.stats.events_inserted += new.events.len() as u64;
        self.stats.events_skipped += (read - new.events.len()) as u64;
        let appended = new.events.len();
        let (batch, events) = new.into_parts()?;
        let logged = started.elapsed();
        // One append at a time, in order. The chunk was admitted while the
        // previous one was appended; it is folded while it is appended.
        self.appended().await?;
        let waited = started.elapsed() - logged;
        self.appending = Some(spawn_append(self.session, self.transaction, batch)?);
        let folding = std::time::Instant::now();
        for e in events {
            self.folder.push(e);
        }
        tracing::debug!(
            events = read,
            new = appended,
            log_ms = logged.as_millis(),
            wait_ms = waited.as_millis(),
            fold_ms = folding.elapsed().as_millis(),
            "chunk ingested"
        );
        Ok(())
    }

    /// DuckDB: waits for the last append, then looks the appended ids up
    /// among the stored ones (see `append.rs`) and takes those found out
    /// of the log again; returns how many (0 on PostgreSQL).
    async fn look_up_repeats(&mut self) -> Result<usize> {
        self.appended().await?;
        let Some(log) = &mut self.log else {
            return Ok(0);
        };
        let started = std::time::Instant::now();
        // What follows is set-based SQL, which DuckDB runs in parallel.
        if let Some(duckdb) = self.session.duckdb() {
            duckdb.restore_threads().await?;
        }
        let repeats = log.stored_before(self.session).await?;
        log.remove(self.session, &repeats).await?;
        self.stats.events_inserted -= repeats.len() as u64;
        self.stats.events_skipped += repeats.len() as u64;
        tracing::debug!(
            stored_before = repeats.len(),
            ms = started.elapsed().as_millis(),
            "appended ids looked up"
        );
        Ok(repeats.len())
    }

    /// Waits for the append of the last chunk pushed (DuckDB).
    async fn appended(&mut self) -> Result<()> {
        match self.appending.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::Internal(format!("an append to the log failed: {e}")))?,
            None => Ok(()),
        }
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
        let engine = self.session.engine();
        // The folded rows become what is staged while DuckDB finishes the
        // last append and looks the appended ids up.
        let (repeats, staged) = tokio::join!(self.look_up_repeats(), async {
            ready_to_stage(engine, folder)
        });
        let from_log = match (repeats?, &self.log) {
            (0, _) | (_, None) => None,
            (_, Some(log)) => Some(log.first_rowid),
        };
        tracing::debug!(
            ms = started.elapsed().as_millis(),
            "log appended and looked up"
        );
        let upserted = match from_log {
            None => upsert_folded(self.session, staged?).await?,
            Some(first_rowid) => {
                self.session
                    .execute(&statements::clear(StageCurrent::Table))
                    .await?;
                self.session
                    .execute_raw(state::stage_state_of_appended(first_rowid))
                    .await?;
                merge_staged(self.session).await?
            }
        };
        drop_staging(self.session).await?;
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
        let appended = self.log.take().map(|log| Appended {
            events_before: log.events_before,
            first_rowid: log.first_rowid,
            ids: log.ids,
        });
        Ok((stats, appended))
    }
}

/// Prepares a unit of work to write events: on DuckDB, takes the write
/// turn, creates the staging tables and starts a [`LogAppend`] (returned);
/// on PostgreSQL creates the staging table (`None`).
async fn start_appending(session: &Session) -> Result<Option<LogAppend>> {
    session.take_write_turn().await;
    create_staging(session).await?;
    match session.duckdb() {
        Some(duckdb) => {
            // One DuckDB thread while appending, the instance's count again
            // from `finish` on (see `DuckDbConnection::limit_threads`).
            duckdb.limit_threads(1).await?;
            Ok(Some(LogAppend::start(session).await?))
        }
        None => Ok(None),
    }
}

/// Drops what [`create_staging`] created (see
/// [`statements::drop_temporary`]).
async fn drop_staging(session: &Session) -> Result<()> {
    session
        .execute(&statements::drop_temporary(StageCurrent::Table))
        .await?;
    session
        .execute(&statements::drop_temporary(StageIds::Table))
        .await?;
    session
        .execute(&statements::drop_temporary(StageKeys::Table))
        .await?;
    Ok(())
}

async fn create_staging(session: &Session) -> Result<()> {
    session.execute(&statements::create_stage_current()).await?;
    if session.engine() == Engine::DuckDb {
        session.execute(&statements::create_stage_ids()).await?;
        session.execute(&statements::create_stage_keys()).await?;
    }
    Ok(())
}

/// A statement that could not be built: a bug, not a database error.
fn internal(e: sea_query::error::Error) -> Error {
    Error::Internal(e.to_string())
}

/// The folded rows, ready to be staged by [`upsert_folded`].
enum Staged {
    /// DuckDB: one record batch for the Appender.
    Batch(RecordBatch),
    /// PostgreSQL: the rows, staged in batches.
    Rows(Vec<fold::Folded>),
}

/// The rows of `folder`, as `engine` stages them.
fn ready_to_stage(engine: Engine, folder: Folder) -> Result<Staged> {
    let folded = folder.finish();
    Ok(match engine {
        Engine::DuckDb => Staged::Batch(columns::current(&folded)?),
        Engine::Postgres => Staged::Rows(folded),
    })
}

/// Folded rows staged per batch on PostgreSQL (see [`upsert_folded`]).
const STAGE_BATCH: usize = 5_000;

/// Writes the folded rows to `exposures_current`: stages them once, then
/// merges them in place with one upsert (`statements::upsert_current`).
/// (Deleting the stored rows and inserting the merged ones instead made
/// DuckDB 2.0.0 corrupt its in-memory segments; see the README's
/// *Reliability* section.)
async fn upsert_folded(session: &Session, staged: Staged) -> Result<UpsertedExposures> {
    let rows = match staged {
        Staged::Batch(batch) if batch.num_rows() == 0 => return Ok(UpsertedExposures::default()),
        Staged::Rows(rows) if rows.is_empty() => return Ok(UpsertedExposures::default()),
        Staged::Batch(batch) => {
            session
                .execute(&statements::clear(StageCurrent::Table))
                .await?;
            let Some(duckdb) = session.duckdb() else {
                return Err(Error::Internal(
                    "a DuckDB batch staged on PostgreSQL".into(),
                ));
            };
            let started = std::time::Instant::now();
            duckdb
                .with_raw(move |conn| stage::append_current(conn, batch))
                .await?;
            tracing::debug!(ms = started.elapsed().as_millis(), "folded rows staged");
            return merge_staged(session).await;
        }
        Staged::Rows(rows) => rows,
    };
    session
        .execute(&statements::clear(StageCurrent::Table))
        .await?;
    // PostgreSQL: in batches, each row built from (and replacing) its fold:
    // a row of typed values takes several times the memory of the fold, and
    // a file can touch 100k keys.
    let mut folded = rows.into_iter();
    loop {
        let rows: Vec<_> = folded
            .by_ref()
            .take(STAGE_BATCH)
            .map(stage::current_row)
            .collect();
        if rows.is_empty() {
            break;
        }
        stage_rows(
            session,
            "stage_current",
            statements::stage_current_columns(),
            rows,
        )
        .await?;
    }
    merge_staged(session).await
}

/// Merges the rows of `stage_current` into `exposures_current` with one
/// upsert (`statements::upsert_current`); returns how many keys it
/// inserted and updated.
async fn merge_staged(session: &Session) -> Result<UpsertedExposures> {
    let count = async |query: &sea_query::SelectStatement| -> Result<u64> {
        let n = session
            .query_one(query)
            .await?
            .map(|row| row.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    };
    match session.engine() {
        Engine::DuckDb => {
            let started = std::time::Instant::now();
            let staged = count(&statements::count_staged_keys()).await?;
            let stored = count(&statements::count_stored_keys()).await?;
            let counted = started.elapsed();
            let upsert = statements::upsert_current(false).map_err(internal)?;
            session.execute(&upsert).await?;
            tracing::debug!(
                count_ms = counted.as_millis(),
                upsert_ms = (started.elapsed() - counted).as_millis(),
                "staged rows merged"
            );
            Ok(UpsertedExposures {
                inserted: staged.saturating_sub(stored),
                updated: stored,
            })
        }
        Engine::Postgres => {
            // Another writer may insert a key between a count and the
            // upsert: the upsert itself says what it inserted.
            let upsert = statements::upsert_current(true).map_err(internal)?;
            let mut out = UpsertedExposures::default();
            for row in session.query_all(&upsert).await? {
                if row.try_get::<bool>("", "inserted")? {
                    out.inserted += 1;
                } else {
                    out.updated += 1;
                }
            }
            Ok(out)
        }
    }
}
