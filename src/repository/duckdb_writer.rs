//! The DuckDB half of the write path (see the module docs of
//! `repository`). The audit log has no index here, so each chunk's new
//! events are appended with the Appender, as an Arrow record batch, and
//! their ids are looked up among the stored ones once, when the call ends
//! (`append.rs`). Writers take turns, and while they append DuckDB runs on
//! one thread. The folded rows are staged with the Appender too.

use duckdb::arrow::record_batch::RecordBatch;
use duckdb_adapter::DuckDbConnection;
use infra::Engine;
use sea_orm::ConnectionTrait;
use sea_query::IntoIden;

use super::append::{self, LogAppend};
use super::check::Appended;
use super::fold::Folder;
use super::statements::{self, StageCurrent, StageIds, StageKeys, StageStored};
use super::{
    ExposureRepository, IngestStats, InsertedEvents, PreparedChunk, UpsertedExposures, columns,
    internal, stage, state,
};
use crate::db::Session;
use crate::error::{Error, Result};
use crate::event::ExposureEvent;

/// Writes events on DuckDB, for one call of the repository.
#[derive(Debug)]
pub(super) struct DuckDbWriter<'s> {
    session: &'s Session,
    /// The session's DuckDB connection.
    duckdb: &'s DuckDbConnection,
    /// What was appended to the audit log (looked up against the stored
    /// log by `finish`, and checked after the commit).
    log: LogAppend,
    /// The append of the last chunk pushed, still running.
    appending: Option<tokio::task::JoinHandle<Result<()>>>,
    /// The unit of work's transaction, the only one the appends may run in
    /// (an append still queued when the ingestion is dropped and rolled
    /// back must not run in autocommit or in the next one).
    transaction: Option<duckdb_adapter::Transaction>,
}

impl<'s> DuckDbWriter<'s> {
    pub(super) fn new(session: &'s Session, duckdb: &'s DuckDbConnection) -> Self {
        Self {
            session,
            duckdb,
            log: LogAppend::default(),
            appending: None,
            transaction: None,
        }
    }

    /// Creates the staging tables.
    pub(super) async fn create_staging(&self) -> Result<()> {
        let session = self.session;
        session.execute(&statements::create_stage_current()).await?;
        session.execute(&statements::create_stage_ids()).await?;
        session.execute(&statements::create_stage_keys()).await?;
        Ok(())
    }

    /// Drops what [`DuckDbWriter::create_staging`] and [`merge_small`]
    /// created (see [`statements::drop_temporary`]).
    pub(super) async fn drop_staging(&self) -> Result<()> {
        for table in [
            StageCurrent::Table.into_iden(),
            StageIds::Table.into_iden(),
            StageKeys::Table.into_iden(),
            StageStored::Table.into_iden(),
        ] {
            self.session
                .execute(&statements::drop_temporary(table))
                .await?;
        }
        Ok(())
    }

    /// Prepares the unit of work to append events: takes the write turn,
    /// creates the staging tables, starts a [`LogAppend`] and names the
    /// transaction the appends run in.
    pub(super) async fn start_appending(&mut self) -> Result<()> {
        self.session.take_write_turn().await;
        self.create_staging().await?;
        // One DuckDB thread while appending, the instance's count again
        // from `finish` on (see `DuckDbConnection::limit_threads`).
        self.duckdb.limit_threads(1).await?;
        self.log = LogAppend::start(self.session).await?;
        self.transaction = self.duckdb.transaction().await?;
        Ok(())
    }

    /// [`Ingestion::push_prepared`](super::Ingestion::push_prepared): keeps
    /// the chunk's events not appended before, starts their append, and
    /// folds them into `folder` meanwhile.
    pub(super) async fn push(
        &mut self,
        chunk: PreparedChunk,
        stats: &mut IngestStats,
        folder: &mut Folder,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let read = chunk.len();
        let new = log_new_events(&mut self.log, chunk);
        stats.events_inserted += new.events.len() as u64;
        stats.events_skipped += (read - new.events.len()) as u64;
        let appended = new.events.len();
        let (batch, events) = new.into_parts()?;
        let logged = started.elapsed();
        // One append at a time, in order. The chunk was admitted while the
        // previous one was appended; it is folded while it is appended.
        self.appended().await?;
        let waited = started.elapsed() - logged;
        self.appending = Some(spawn_append(self.duckdb, self.transaction, batch)?);
        let folding = std::time::Instant::now();
        for e in events {
            folder.push(e);
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

    /// Waits for the last append, then looks the appended ids up among the
    /// stored ones (see `append.rs`) and takes those found out of the log
    /// again; returns how many.
    async fn look_up_repeats(&mut self, stats: &mut IngestStats) -> Result<usize> {
        self.appended().await?;
        let log = &mut self.log;
        let started = std::time::Instant::now();
        // What follows is set-based SQL, which DuckDB runs in parallel.
        self.duckdb.restore_threads().await?;
        let repeats = log.stored_before(self.session).await?;
        log.remove(self.session, &repeats).await?;
        stats.events_inserted -= repeats.len() as u64;
        stats.events_skipped += repeats.len() as u64;
        tracing::debug!(
            stored_before = repeats.len(),
            ms = started.elapsed().as_millis(),
            "appended ids looked up"
        );
        Ok(repeats.len())
    }

    /// Waits for the append of the last chunk pushed.
    async fn appended(&mut self) -> Result<()> {
        match self.appending.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::Internal(format!("an append to the log failed: {e}")))?,
            None => Ok(()),
        }
    }

    /// [`Ingestion::finish_checked`](super::Ingestion::finish_checked):
    /// looks the appended ids up and writes the current state, from
    /// `folder`, or from the log when some ids were stored already; returns
    /// what it wrote and what the log was appended.
    pub(super) async fn finish(
        &mut self,
        folder: Folder,
        stats: &mut IngestStats,
    ) -> Result<(UpsertedExposures, Appended)> {
        let started = std::time::Instant::now();
        // The folded rows become what is staged while DuckDB finishes the
        // last append and looks the appended ids up.
        let (repeats, staged) = tokio::join!(self.look_up_repeats(stats), async {
            ready_to_stage(folder)
        });
        let from_log = match repeats? {
            0 => None,
            _ => Some(self.log.first_rowid),
        };
        tracing::debug!(
            ms = started.elapsed().as_millis(),
            "log appended and looked up"
        );
        let upserted = match from_log {
            None => self.upsert_folded(staged?).await?,
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
        let log = std::mem::take(&mut self.log);
        let appended = Appended {
            events_before: log.events_before,
            first_rowid: log.first_rowid,
            ids: log.ids,
        };
        Ok((upserted, appended))
    }

    /// [`ExposureRepository::batch_insert_events`]'s chunks.
    pub(super) async fn insert_events(
        &mut self,
        repo: ExposureRepository,
        events: &[ExposureEvent],
    ) -> Result<InsertedEvents> {
        let log = &mut self.log;
        let mut new_positions = Vec::new();
        for (offset, chunk) in (0..)
            .step_by(repo.chunk_size)
            .zip(events.chunks(repo.chunk_size))
        {
            let new = log_new_events(log, repo.prepare(Engine::DuckDb, chunk.to_vec())?);
            new_positions.extend(new.positions.iter().map(|i| offset + i));
            append_to_log(self.duckdb, new.into_parts()?.0).await?;
        }
        let repeats = log.stored_before(self.session).await?;
        log.remove(self.session, &repeats).await?;
        new_positions.retain(|&i| {
            events
                .get(i)
                .is_some_and(|e| !repeats.contains(&e.event_id))
        });
        let inserted = new_positions.len();
        Ok(InsertedEvents {
            inserted: inserted as u64,
            skipped: (events.len() - inserted) as u64,
            new_positions,
        })
    }

    /// Writes the folded rows (see [`ready_to_stage`]) to
    /// `exposures_current`: stages them once with the Appender, then merges
    /// them in place ([`merge_staged`]). (Deleting the stored rows and inserting the merged ones instead made
    /// DuckDB 2.0.0 corrupt its in-memory segments; see the README's
    /// *Reliability* section.)
    pub(super) async fn upsert_folded(&self, batch: RecordBatch) -> Result<UpsertedExposures> {
        let session = self.session;
        if batch.num_rows() == 0 {
            return Ok(UpsertedExposures::default());
        }
        session
            .execute(&statements::clear(StageCurrent::Table))
            .await?;
        let started = std::time::Instant::now();
        self.duckdb
            .with_raw(move |conn| stage::append_current(conn, batch))
            .await?;
        tracing::debug!(ms = started.elapsed().as_millis(), "folded rows staged");
        merge_staged(session).await
    }
}

/// The rows of `folder`, as one record batch for the Appender.
pub(super) fn ready_to_stage(folder: Folder) -> Result<RecordBatch> {
    let folded = folder.finish();
    Ok(columns::current(&folded)?)
}

/// Merges the rows of `stage_current` into `exposures_current`: up to
/// [`SMALL_MERGE`] keys with [`merge_small`], more with one upsert
/// (`statements::upsert_current`); returns how many keys it inserted and
/// updated.
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
    let started = std::time::Instant::now();
    let staged = count(&statements::count_staged_keys()).await?;
    if staged <= SMALL_MERGE {
        return merge_small(session, staged).await;
    }
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

/// Staged keys up to which DuckDB merges with [`merge_small`] rather than
/// the upsert (see the README's performance section for the measurements).
const SMALL_MERGE: u64 = 20_000;

/// DuckDB's merge of a few staged keys. DuckDB runs the upsert
/// ([`statements::upsert_current`]) as a join that reads every column of
/// every stored row, and rewrites all 33 merged columns of each stored key
/// it touches, changed or not: a cost that grows with `exposures_current`,
/// not with the batch. This instead copies the stored rows of the staged
/// keys (reading the other rows' key columns only), asks which columns the
/// merge changes, updates only those, in the rows where they change, and
/// inserts the keys not stored yet. Same rule, same result; for a
/// 1,000-key batch into 100,000 stored keys about a third of the upsert's
/// time. For large batches the one upsert is faster.
async fn merge_small(session: &Session, staged: u64) -> Result<UpsertedExposures> {
    let started = std::time::Instant::now();
    session.execute(&statements::create_stage_stored()).await?;
    session
        .execute(&statements::clear(StageStored::Table))
        .await?;
    let stored = session
        .execute(&statements::copy_stored_of_staged().map_err(internal)?)
        .await?
        .rows_affected();
    let mut changed = Vec::new();
    if stored > 0 {
        // Planning this query costs DuckDB some 40 ms (33 merge
        // expressions): skipped when no staged key is stored.
        let (query, columns) = statements::changed_columns();
        let row = session
            .query_one(&query)
            .await?
            .ok_or_else(|| Error::Internal("the changed-columns query returned no row".into()))?;
        for c in columns {
            if row.try_get::<Option<bool>>("", sea_orm::IdenStatic::as_str(&c))? == Some(true) {
                changed.push(c);
            }
        }
    }
    if !changed.is_empty() {
        session
            .execute(&statements::update_changed(&changed))
            .await?;
    }
    session
        .execute(&statements::insert_unstored().map_err(internal)?)
        .await?;
    tracing::debug!(
        stored,
        changed_columns = changed.len(),
        ms = started.elapsed().as_millis(),
        "staged rows merged (small batch)"
    );
    Ok(UpsertedExposures {
        inserted: staged.saturating_sub(stored),
        updated: stored,
    })
}

/// Events of a chunk not appended before in the unit of work, with their
/// keys, positions in the chunk and, when they are the whole chunk, its
/// prepared record batch.
#[derive(Debug, Default)]
struct NewEvents {
    events: Vec<ExposureEvent>,
    keys: Vec<u64>,
    positions: Vec<usize>,
    batch: Option<RecordBatch>,
}

impl NewEvents {
    /// The record batch to append (the prepared one, or one built from the
    /// events kept) and the events.
    fn into_parts(self) -> Result<(RecordBatch, Vec<ExposureEvent>)> {
        let batch = match self.batch {
            Some(batch) => batch,
            None => columns::events(&self.events, &self.keys)?,
        };
        Ok((batch, self.events))
    }
}

/// Keeps the events of `chunk` whose ids `log` has not appended yet (and
/// records them as appended).
fn log_new_events(log: &mut LogAppend, chunk: PreparedChunk) -> NewEvents {
    let PreparedChunk {
        events,
        keys,
        batch,
    } = chunk;
    let read = events.len();
    let mut new = NewEvents::default();
    for (position, e) in events.into_iter().enumerate() {
        let key = keys
            .get(position)
            .copied()
            .unwrap_or_else(|| append::event_key(&e.event_id));
        if log.admit(&e.event_id, key) {
            new.events.push(e);
            new.keys.push(key);
            new.positions.push(position);
        }
    }
    // A batch holds the whole chunk; with events left out it is rebuilt.
    new.batch = batch.filter(|_| new.events.len() == read);
    new
}

/// Appends `batch` (events and their keys) to `exposure_events`.
async fn append_to_log(duckdb: &DuckDbConnection, batch: RecordBatch) -> Result<()> {
    duckdb
        .with_raw(move |conn| append::append_batch(conn, batch))
        .await?;
    Ok(())
}

/// As [`append_to_log`], as a task of its own, inside `transaction` only:
/// statements sent on the session meanwhile may run before it, so the
/// caller awaits it before its next statement.
fn spawn_append(
    duckdb: &DuckDbConnection,
    transaction: Option<duckdb_adapter::Transaction>,
    batch: RecordBatch,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let Some(transaction) = transaction else {
        return Err(Error::Internal(
            "an append to the log ran outside a DuckDB unit of work".into(),
        ));
    };
    let conn = duckdb.clone();
    Ok(tokio::spawn(async move {
        conn.with_raw_in(transaction, move |conn| append::append_batch(conn, batch))
            .await?;
        Ok(())
    }))
}
