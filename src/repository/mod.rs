//! The repository: ingesting events, the quarantine, and dashboard queries.
//!
//! [`ExposureRepository::ingest_events`] runs inside a unit of work
//! ([`Session`]), so a whole call is one transaction: all of it or none of
//! it. The rules (`fold.rs`) and every statement (`statements.rs`, built
//! with sea-query) are the same on both engines; what differs is how rows
//! reach the database in bulk and when keys are locked.
//!
//! On DuckDB, per chunk of events, it
//!
//! 1. drops repeats of an event id within the chunk;
//! 2. stages the chunk's ids with DuckDB's Appender and looks up which are
//!    stored already (a repeat from an earlier chunk of the same call is
//!    stored by then, so it is found too); those are skipped;
//! 3. appends the new events straight to `exposure_events` with the
//!    Appender (the audit log needs no upsert: which ids are new is known);
//! 4. folds the new events into one row per key (`fold.rs` explains the
//!    rules and why), looking up the stored `last_seen` of keys the call
//!    has not seen yet.
//!
//! On PostgreSQL, where other processes write at the same time, per chunk
//! it drops repeats and inserts the events with `INSERT ... ON CONFLICT
//! (event_id) DO NOTHING RETURNING event_id` (multi-row statements), which
//! says which were new even when another writer stores the same event
//! concurrently, then folds them as on DuckDB. Before the current state is
//! written, every key the call touched is locked at once, in ascending
//! order, and its stored `last_seen` read again; keys another writer
//! changed since the fold read them are folded again from the call's events
//! (`revalidate`). Holding the locks to the commit makes the result that
//! of some serial order of the writers; taking them all at once keeps
//! writers from deadlocking on keys.
//!
//! When the call ends, the folded rows are staged once and upserted into
//! `exposures_current` with `INSERT ... SELECT ... ON CONFLICT (office_id,
//! exposure_id) DO UPDATE SET ... COALESCE/GREATEST/LEAST/CASE`, after a
//! *fill* update only when late events fill NULL details: every statement
//! carries at most one row per key, and each key is written once per call,
//! in place. (On DuckDB, `exposures_current` has no secondary index, so an
//! update changes no indexed column: see migration
//! `m20261128_000004_drop_current_indexes_on_duckdb`.)

mod check;
mod fold;
mod stage;
mod statements;

pub use check::Appended;
pub use stage::event_row;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use sea_query::Alias;
use serde::Serialize;

use self::fold::Folder;
use self::fold::Key;
use self::statements::{StageCurrent, StageIds, StageKeys};
use crate::db::{Engine, Session};
use crate::entity::prelude::*;
use crate::entity::{exposure_current, exposure_event, quarantined_file};
use crate::error::{Error, Result};
use crate::event::ExposureEvent;

/// Events per chunk unless configured otherwise (see the README's
/// performance section for the measurements behind it).
pub const DEFAULT_CHUNK_SIZE: usize = 25_000;

/// What an ingest did. Adds up across calls (`+=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngestStats {
    /// Events appended to `exposure_events`.
    pub events_inserted: u64,
    /// Events skipped: already stored, or repeated within the input.
    pub events_skipped: u64,
    /// Keys of `exposures_current` that did not exist before the call.
    pub exposures_inserted: u64,
    /// Keys that existed before the call and were touched by it.
    pub exposures_updated: u64,
}

impl std::ops::AddAssign for IngestStats {
    fn add_assign(&mut self, other: Self) {
        self.events_inserted += other.events_inserted;
        self.events_skipped += other.events_skipped;
        self.exposures_inserted += other.exposures_inserted;
        self.exposures_updated += other.exposures_updated;
    }
}

impl std::ops::Add for IngestStats {
    type Output = Self;
    fn add(mut self, other: Self) -> Self {
        self += other;
        self
    }
}

/// Outcome of [`ExposureRepository::batch_insert_events`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsertedEvents {
    /// Events appended.
    pub inserted: u64,
    /// Events skipped (already stored, or repeated in the input).
    pub skipped: u64,
    /// Input positions of the appended events, ascending.
    pub new_positions: Vec<usize>,
}

/// Outcome of [`ExposureRepository::batch_upsert_current`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertedExposures {
    /// Keys created.
    pub inserted: u64,
    /// Keys that existed and were updated.
    pub updated: u64,
}

/// A file that failed to ingest, for [`ExposureRepository::quarantine_file`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantineRecord {
    /// The input file's path as given.
    pub filename: String,
    /// A short machine-readable category (`invalid_json`, `io_error`, ...).
    pub error_type: String,
    /// A human-readable explanation.
    pub error_message: String,
    /// Details pointing at the problem (line, field, reason, ...).
    pub error_details_json: Option<serde_json::Value>,
}

/// Filters of [`ExposureRepository::current_exposures`]; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExposureFilter {
    /// Only this office.
    pub office_id: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only this severity.
    pub severity: Option<Severity>,
    /// Only this exposure class.
    pub exposure_class: Option<String>,
    /// Only exposures last seen at or after this instant.
    pub last_seen_from: Option<DateTime<Utc>>,
    /// Only exposures last seen before this instant.
    pub last_seen_to: Option<DateTime<Utc>>,
}

/// A page of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Rows to skip.
    pub offset: u64,
    /// Rows to return at most.
    pub limit: u64,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            offset: 0,
            limit: 100,
        }
    }
}

/// Current exposures counted by office, severity and status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExposureCounts {
    /// `(office_id, count)`, by office id.
    pub by_office: Vec<(String, u64)>,
    /// `(severity, count)`, most severe first.
    pub by_severity: Vec<(Severity, u64)>,
    /// `(status, count)`, in vocabulary order.
    pub by_status: Vec<(Status, u64)>,
}

/// Row counts of the three tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Rows of `exposure_events`.
    pub events: u64,
    /// Rows of `exposures_current`.
    pub exposures: u64,
    /// Rows of `quarantined_files`.
    pub quarantined_files: u64,
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
    /// # Errors
    /// The database's error while preparing the staging tables.
    pub async fn ingestion<'s>(&self, session: &'s Session) -> Result<Ingestion<'s>> {
        create_staging(session).await?;
        let appended = match session.engine() {
            Engine::DuckDb => Some(Appended {
                events_before: ExposureEvents::find().count(session).await?,
                ..Appended::default()
            }),
            Engine::Postgres => None,
        };
        Ok(Ingestion {
            repo: *self,
            session,
            folder: Folder::default(),
            pending: Vec::new(),
            appended,
            stats: IngestStats::default(),
            finished: false,
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
        create_staging(session).await?;
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
        Ok(out)
    }

    /// Applies `events` to `exposures_current` (whether or not they are in
    /// the audit log), with the rules described in the module docs.
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
        if session.engine() == Engine::Postgres {
            // All keys locked at once, before any is read (see `revalidate`).
            fold_chunk(session, &mut folder, events.iter(), Lock::Keys).await?;
        } else {
            for chunk in events.chunks(self.chunk_size) {
                fold_chunk(session, &mut folder, chunk.iter(), Lock::No).await?;
            }
        }
        upsert_folded(session, folder).await
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

    /// Records a file that failed to ingest.
    ///
    /// # Errors
    /// The database's error.
    pub async fn quarantine_file(
        &self,
        conn: &impl ConnectionTrait,
        record: QuarantineRecord,
    ) -> Result<quarantined_file::Model> {
        let row = quarantined_file::ActiveModel {
            filename: ActiveValue::Set(record.filename),
            error_type: ActiveValue::Set(record.error_type),
            error_message: ActiveValue::Set(record.error_message),
            error_details_json: ActiveValue::Set(record.error_details_json),
            ..Default::default()
        };
        Ok(row.insert(conn).await?)
    }

    /// Every quarantined file, oldest first.
    ///
    /// # Errors
    /// The database's error.
    pub async fn quarantined_files(
        &self,
        conn: &impl ConnectionTrait,
    ) -> Result<Vec<quarantined_file::Model>> {
        Ok(QuarantinedFiles::find()
            .order_by_asc(quarantined_file::Column::Id)
            .all(conn)
            .await?)
    }

    /// Current exposures matching `filter`, newest `last_seen` first (then
    /// by office and exposure id, so pages are stable).
    ///
    /// # Errors
    /// The database's error.
    pub async fn current_exposures(
        &self,
        conn: &impl ConnectionTrait,
        filter: &ExposureFilter,
        page: Page,
    ) -> Result<Vec<exposure_current::Model>> {
        use exposure_current::Column as C;
        let mut query = ExposuresCurrent::find();
        if let Some(office) = &filter.office_id {
            query = query.filter(C::OfficeId.eq(office.as_str()));
        }
        if let Some(status) = filter.status {
            query = query.filter(C::Status.eq(status));
        }
        if let Some(severity) = filter.severity {
            query = query.filter(C::Severity.eq(severity));
        }
        if let Some(class) = &filter.exposure_class {
            query = query.filter(C::ExposureClass.eq(class.as_str()));
        }
        if let Some(from) = filter.last_seen_from {
            query = query.filter(C::LastSeen.gte(from));
        }
        if let Some(to) = filter.last_seen_to {
            query = query.filter(C::LastSeen.lt(to));
        }
        Ok(query
            .order_by_desc(C::LastSeen)
            .order_by_asc(C::OfficeId)
            .order_by_asc(C::ExposureId)
            .offset(page.offset)
            .limit(page.limit)
            .all(conn)
            .await?)
    }

    /// Current exposures counted by office, severity and status.
    ///
    /// # Errors
    /// The database's error.
    pub async fn exposure_counts(&self, conn: &impl ConnectionTrait) -> Result<ExposureCounts> {
        use exposure_current::Column as C;
        let mut by_severity = parse_keys(count_by(conn, C::Severity).await?)?;
        by_severity.sort_by_key(|&(severity, _): &(Severity, u64)| std::cmp::Reverse(severity));
        let mut by_status = parse_keys(count_by(conn, C::Status).await?)?;
        by_status.sort_by_key(|&(status, _): &(Status, u64)| status);
        Ok(ExposureCounts {
            by_office: count_by(conn, C::OfficeId).await?,
            by_severity,
            by_status,
        })
    }

    /// Row counts of the three tables.
    ///
    /// # Errors
    /// The database's error.
    pub async fn totals(&self, conn: &impl ConnectionTrait) -> Result<Totals> {
        Ok(Totals {
            events: ExposureEvents::find().count(conn).await?,
            exposures: ExposuresCurrent::find().count(conn).await?,
            quarantined_files: QuarantinedFiles::find().count(conn).await?,
        })
    }
}

/// An ingest fed in pieces; see [`ExposureRepository::ingestion`].
///
/// Its events are in the audit log as soon as they are pushed, but the
/// current state is written by [`Ingestion::finish`]. Dropping an ingestion
/// that was fed events without finishing it makes its unit of work refuse
/// to commit, so the two tables cannot disagree.
#[derive(Debug)]
#[must_use = "call finish() to write the current state"]
pub struct Ingestion<'s> {
    repo: ExposureRepository,
    session: &'s Session,
    /// The current state of every key touched so far, written by `finish`.
    folder: Folder,
    /// PostgreSQL: the new events' ids in input order, in case `finish`
    /// must fold some keys again (see [`revalidate`]).
    pending: Vec<String>,
    /// DuckDB: what was appended to the audit log, for the check after the
    /// commit.
    appended: Option<Appended>,
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
        for chunk in events.chunks(self.repo.chunk_size) {
            let started = std::time::Instant::now();
            let new = insert_chunk(self.session, chunk).await?;
            let appended = started.elapsed();
            self.stats.events_inserted += new.len() as u64;
            self.stats.events_skipped += (chunk.len() - new.len()) as u64;
            if self.session.engine() == Engine::Postgres {
                self.pending
                    .extend(new.iter().map(|&i| chunk[i].event_id.clone()));
            }
            if let Some(appended) = &mut self.appended {
                for &i in &new {
                    appended.ids.push(&chunk[i].event_id);
                }
            }
            // On PostgreSQL, `finish` locks and re-checks these reads.
            fold_chunk(
                self.session,
                &mut self.folder,
                new.iter().map(|&i| &chunk[i]),
                Lock::No,
            )
            .await?;
            tracing::debug!(
                events = chunk.len(),
                new = new.len(),
                append_ms = appended.as_millis(),
                fold_ms = (started.elapsed() - appended).as_millis(),
                "chunk ingested"
            );
        }
        Ok(())
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
    /// # Errors
    /// As [`Ingestion::finish`].
    pub async fn finish_checked(mut self) -> Result<(IngestStats, Option<Appended>)> {
        let started = std::time::Instant::now();
        if self.session.engine() == Engine::Postgres {
            let pending = std::mem::take(&mut self.pending);
            revalidate(self.session, &mut self.folder, &pending).await?;
        }
        let upserted = upsert_folded(self.session, std::mem::take(&mut self.folder)).await?;
        self.finished = true;
        tracing::debug!(
            inserted = upserted.inserted,
            updated = upserted.updated,
            upsert_ms = started.elapsed().as_millis(),
            "current state written"
        );
        let stats = IngestStats {
            exposures_inserted: upserted.inserted,
            exposures_updated: upserted.updated,
            ..self.stats
        };
        Ok((stats, self.appended.take()))
    }
}

async fn create_staging(session: &Session) -> Result<()> {
    session.execute(&statements::create_stage_keys()).await?;
    session.execute(&statements::create_stage_current()).await?;
    if session.engine() == Engine::DuckDb {
        session.execute(&statements::create_stage_ids()).await?;
    }
    Ok(())
}

/// Fills the (emptied) temporary staging table `table` with `rows`: the
/// Appender on DuckDB, multi-row inserts on PostgreSQL.
async fn stage_rows<const N: usize>(
    session: &Session,
    table: &'static str,
    columns: [sea_query::DynIden; N],
    rows: Vec<[sea_query::Value; N]>,
) -> Result<()> {
    if let Some(duckdb) = session.duckdb() {
        duckdb
            .with_raw(move |conn| stage::append_temp(conn, table, rows))
            .await?;
        return Ok(());
    }
    for batch in stage::postgres_batches(rows) {
        let insert =
            statements::insert_rows(Alias::new(table), columns.clone(), batch).map_err(internal)?;
        session.execute(&insert).await?;
    }
    Ok(())
}

/// A statement that could not be built: a bug, not a database error.
fn internal(e: sea_query::error::Error) -> Error {
    Error::Internal(e.to_string())
}

/// Writes the chunk's events that are not stored yet to `exposure_events`;
/// returns their positions within the chunk.
async fn insert_chunk(session: &Session, chunk: &[ExposureEvent]) -> Result<Vec<usize>> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(chunk.len());
    let candidates: Vec<usize> = (0..chunk.len())
        .filter(|&i| seen.insert(chunk[i].event_id.as_str()))
        .collect();
    let Some(duckdb) = session.duckdb() else {
        // PostgreSQL: the insert itself says which ids were new.
        let rows = candidates
            .iter()
            .map(|&i| stage::event_row(&chunk[i]))
            .collect();
        let mut inserted: HashSet<String> = HashSet::with_capacity(candidates.len());
        for batch in stage::postgres_batches(rows) {
            let insert = statements::insert_new_events(batch).map_err(internal)?;
            for row in session.query_all(&insert).await? {
                inserted.insert(row.try_get("", "event_id")?);
            }
        }
        return Ok(candidates
            .into_iter()
            .filter(|&i| inserted.contains(&chunk[i].event_id))
            .collect());
    };
    // DuckDB: look the ids up, then append only the new events.
    session.execute(&statements::clear(StageIds::Table)).await?;
    let ids = candidates
        .iter()
        .map(|&i| stage::id_row(&chunk[i].event_id))
        .collect();
    stage_rows(session, "stage_ids", statements::stage_ids_columns(), ids).await?;
    let stored: HashSet<String> = session
        .query_all(&statements::stored_event_ids())
        .await?
        .iter()
        .map(|row| row.try_get::<String>("", "event_id"))
        .collect::<Result<_, _>>()?;
    let new: Vec<usize> = candidates
        .into_iter()
        .filter(|&i| !stored.contains(&chunk[i].event_id))
        .collect();
    let rows: Vec<_> = new.iter().map(|&i| stage::event_row(&chunk[i])).collect();
    duckdb
        .with_raw(move |conn| stage::append_events(conn, rows))
        .await?;
    Ok(new)
}

/// Folds new events into `folder`, first looking up (and with
/// [`Lock::Keys`], locking) the stored `last_seen` of the keys the folder
/// does not know yet.
async fn fold_chunk<'a>(
    session: &Session,
    folder: &mut Folder,
    events: impl Iterator<Item = &'a ExposureEvent> + Clone,
    lock: Lock,
) -> Result<()> {
    let mut unknown: HashSet<(&str, &str)> = HashSet::new();
    for e in events.clone() {
        if !folder.knows(&e.office_id, &e.exposure_id) {
            unknown.insert((e.office_id.as_str(), e.exposure_id.as_str()));
        }
    }
    let stored = stored_last_seen(session, unknown, lock).await?;
    fold_with(folder, &stored, events);
    Ok(())
}

/// PostgreSQL, before the current state is written: locks every key the
/// ingestion folded (one statement, in ascending order) and reads their
/// stored `last_seen` again. Keys whose value changed since the fold read
/// it, because another writer committed in between, are folded again from
/// the ingestion's events, read back from the audit log in input order.
///
/// Holding the keys from this read to the commit makes concurrent writers
/// exact: the fold decides from the stored `last_seen` which events are
/// late. Taking all of a call's locks at once, at the end, keeps writers
/// from deadlocking on keys: none waits for a key while holding others it
/// took earlier. And the common case costs one statement: the fold's own
/// reads, per chunk and without locks, are usually still true.
async fn revalidate(session: &Session, folder: &mut Folder, pending: &[String]) -> Result<()> {
    const READ_BACK: usize = 5_000;
    let assumed: Vec<(&str, &str, Option<i64>)> = folder.assumed().collect();
    let keys = assumed.iter().map(|&(o, x, _)| (o, x)).collect();
    let stored = stored_last_seen(session, keys, Lock::Keys).await?;
    let stale: HashSet<Key> = assumed
        .iter()
        .filter(|&&(o, x, was)| stored.get(&(o.to_owned(), x.to_owned())).copied() != was)
        .map(|&(o, x, _)| (o.to_owned(), x.to_owned()))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    folder.forget(&stale);
    for ids in pending.chunks(READ_BACK) {
        // Only the columns the fold reads: decoding the JSON payloads back
        // would cost more than the rest of the read.
        let mut by_id: HashMap<String, ExposureEvent> = ExposureEvents::find()
            .select_only()
            .columns(statements::EVENT_COLUMNS.into_iter().filter(|c| {
                !matches!(
                    c,
                    exposure_event::Column::RawPayloadJson | exposure_event::Column::ScanRunId
                )
            }))
            .filter(exposure_event::Column::EventId.is_in(ids.iter().map(String::as_str)))
            .into_model::<FoldedEvent>()
            .all(session)
            .await?
            .into_iter()
            .map(|e| (e.event_id.clone(), ExposureEvent::from(e)))
            .collect();
        let events = ids
            .iter()
            .map(|id| {
                by_id.remove(id).ok_or_else(|| {
                    Error::Internal(format!("event {id} vanished from the audit log"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let of_stale = events
            .iter()
            .filter(|e| stale.contains(&(e.office_id.clone(), e.exposure_id.clone())));
        fold_with(folder, &stored, of_stale);
    }
    tracing::debug!(
        keys = stale.len(),
        events = pending.len(),
        read_back_ms = started.elapsed().as_millis(),
        "keys changed by a concurrent writer folded again"
    );
    Ok(())
}

/// An event as the fold reads it back: without `scan_run_id` and the
/// payload, which the current state does not keep.
#[derive(Debug, FromQueryResult)]
struct FoldedEvent {
    event_id: String,
    timestamp: DateTime<Utc>,
    office_id: String,
    asset_id: String,
    exposure_id: String,
    exposure_class: String,
    event_action: EventAction,
    status: Status,
    severity: Severity,
    risk_score: f64,
    hostname: Option<String>,
    asset_ip: Option<String>,
    dst_ip: Option<String>,
    dst_port: Option<i32>,
    protocol: Option<String>,
    service_name: Option<String>,
    service_product: Option<String>,
    service_version: Option<String>,
}

impl From<FoldedEvent> for ExposureEvent {
    fn from(e: FoldedEvent) -> Self {
        Self {
            event_id: e.event_id,
            timestamp: e.timestamp,
            office_id: e.office_id,
            asset_id: e.asset_id,
            exposure_id: e.exposure_id,
            exposure_class: e.exposure_class,
            event_action: e.event_action,
            status: e.status,
            severity: e.severity,
            risk_score: e.risk_score,
            hostname: e.hostname,
            asset_ip: e.asset_ip,
            dst_ip: e.dst_ip,
            dst_port: e.dst_port,
            protocol: e.protocol,
            service_name: e.service_name,
            service_product: e.service_product,
            service_version: e.service_version,
            scan_run_id: None,
            raw_payload_json: None,
        }
    }
}

/// Whether [`stored_last_seen`] locks the keys it reads (PostgreSQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// A plain read: the fold of a chunk, revalidated at the end.
    No,
    /// Lock the keys first (`statements::lock_staged_keys`), to the commit.
    Keys,
}

/// The stored `last_seen` of `keys` (absent: not stored).
async fn stored_last_seen(
    session: &Session,
    keys: HashSet<(&str, &str)>,
    lock: Lock,
) -> Result<HashMap<Key, i64>> {
    let mut stored = HashMap::new();
    if keys.is_empty() {
        return Ok(stored);
    }
    session
        .execute(&statements::clear(StageKeys::Table))
        .await?;
    let rows = keys.iter().map(|(o, x)| stage::key_row(o, x)).collect();
    stage_rows(
        session,
        "stage_keys",
        statements::stage_keys_columns(),
        rows,
    )
    .await?;
    if lock == Lock::Keys && session.engine() == Engine::Postgres {
        session.query_all(&statements::lock_staged_keys()).await?;
    }
    for row in session.query_all(&statements::stored_last_seen()).await? {
        let last_seen: DateTime<Utc> = row.try_get("", "last_seen")?;
        let key = (
            row.try_get("", "office_id")?,
            row.try_get("", "exposure_id")?,
        );
        stored.insert(key, last_seen.timestamp_micros());
    }
    Ok(stored)
}

/// Feeds `events` to the folder; `stored` has the stored `last_seen` of
/// every key the folder meets for the first time.
fn fold_with<'a>(
    folder: &mut Folder,
    stored: &HashMap<Key, i64>,
    events: impl Iterator<Item = &'a ExposureEvent>,
) {
    for e in events {
        folder.push(e, || {
            stored
                .get(&(e.office_id.clone(), e.exposure_id.clone()))
                .copied()
        });
    }
}

/// Writes the folded rows to `exposures_current`: stage them once, then
/// (when late events fill NULL details) the fill update and the replace
/// upsert, both in place. (Deleting the stored rows and inserting the merged
/// ones instead made DuckDB 2.0.0 corrupt its in-memory segments; see the
/// README's *Reliability* section.)
async fn upsert_folded(session: &Session, folder: Folder) -> Result<UpsertedExposures> {
    let folded = folder.finish();
    let mut out = UpsertedExposures::default();
    for f in &folded {
        if f.existed {
            out.updated += 1;
        } else {
            out.inserted += 1;
        }
    }
    if folded.is_empty() {
        return Ok(out);
    }
    session
        .execute(&statements::clear(StageCurrent::Table))
        .await?;
    let rows: Vec<_> = folded.iter().flat_map(stage::current_rows).collect();
    let needs_fill = rows.len() > folded.len();
    stage_rows(
        session,
        "stage_current",
        statements::stage_current_columns(),
        rows,
    )
    .await?;
    if needs_fill {
        session
            .execute(&statements::fill_details(ExposuresCurrent))
            .await?;
    }
    let upsert = statements::upsert_current(ExposuresCurrent).map_err(internal)?;
    session.execute(&upsert).await?;
    Ok(out)
}

#[derive(Debug, FromQueryResult)]
struct KeyCount {
    key: String,
    n: i64,
}

async fn count_by(
    conn: &impl ConnectionTrait,
    column: exposure_current::Column,
) -> Result<Vec<(String, u64)>> {
    let rows = ExposuresCurrent::find()
        .select_only()
        .column_as(column, "key")
        .column_as(column.count(), "n")
        .group_by(column)
        .order_by_asc(column)
        .into_model::<KeyCount>()
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.key, u64::try_from(r.n).unwrap_or(0)))
        .collect())
}

fn parse_keys<T: std::str::FromStr>(counts: Vec<(String, u64)>) -> Result<Vec<(T, u64)>>
where
    T::Err: std::fmt::Display,
{
    counts
        .into_iter()
        .map(|(k, n)| {
            k.parse()
                .map(|k| (k, n))
                .map_err(|e: T::Err| Error::Internal(e.to_string()))
        })
        .collect()
}
