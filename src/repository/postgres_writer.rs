//! The PostgreSQL half of the write path (see the module docs of
//! `repository`). Other processes write at the same time, so the
//! statements themselves say what they did: `INSERT ... ON CONFLICT
//! (event_id) DO NOTHING RETURNING event_id` which events were new, the
//! merge `RETURNING` whether it inserted or updated each key. Rows are
//! staged with multi-row inserts.

use std::collections::HashSet;

use sea_orm::ConnectionTrait;
use sea_query::Alias;

use super::fold::{self, Folder};
use super::statements::{self, StageCurrent};
use super::{IngestStats, InsertedEvents, UpsertedExposures, internal, stage};
use crate::db::Session;
use crate::error::Result;
use crate::event::ExposureEvent;

/// Folded rows staged per batch (see [`PostgresWriter::upsert_folded`]).
const STAGE_BATCH: usize = 5_000;

/// Writes events on PostgreSQL, for one call of the repository.
#[derive(Debug)]
pub(super) struct PostgresWriter<'s> {
    session: &'s Session,
}

impl<'s> PostgresWriter<'s> {
    pub(super) fn new(session: &'s Session) -> Self {
        Self { session }
    }

    /// Creates the staging table.
    pub(super) async fn create_staging(&self) -> Result<()> {
        self.session
            .execute(&statements::create_stage_current())
            .await?;
        Ok(())
    }

    /// Drops what [`PostgresWriter::create_staging`] created (see
    /// [`statements::drop_temporary`]).
    pub(super) async fn drop_staging(&self) -> Result<()> {
        self.session
            .execute(&statements::drop_temporary(StageCurrent::Table))
            .await?;
        Ok(())
    }

    /// [`Ingestion::push`](super::Ingestion::push): per chunk of
    /// `chunk_size`, the insert says which events are new, and those are
    /// folded into `folder`.
    pub(super) async fn push(
        &self,
        events: Vec<ExposureEvent>,
        chunk_size: usize,
        stats: &mut IngestStats,
        folder: &mut Folder,
    ) -> Result<()> {
        let mut events = events.into_iter();
        loop {
            let chunk: Vec<ExposureEvent> = events.by_ref().take(chunk_size).collect();
            if chunk.is_empty() {
                return Ok(());
            }
            let started = std::time::Instant::now();
            let new = insert_chunk(self.session, &chunk).await?;
            stats.events_inserted += new.len() as u64;
            stats.events_skipped += (chunk.len() - new.len()) as u64;
            let read = chunk.len();
            let mut new_positions = new.iter().copied().peekable();
            for (i, e) in chunk.into_iter().enumerate() {
                if new_positions.next_if_eq(&i).is_some() {
                    folder.push(e);
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

    /// [`ExposureRepository::batch_insert_events`](super::ExposureRepository::batch_insert_events)'s
    /// chunks of `chunk_size`.
    pub(super) async fn insert_events(
        &self,
        chunk_size: usize,
        events: &[ExposureEvent],
    ) -> Result<InsertedEvents> {
        let session = self.session;
        let mut out = InsertedEvents::default();
        let mut offset = 0;
        for chunk in events.chunks(chunk_size) {
            let new = insert_chunk(session, chunk).await?;
            out.inserted += new.len() as u64;
            out.skipped += (chunk.len() - new.len()) as u64;
            out.new_positions
                .extend(new.into_iter().map(|i| offset + i));
            offset += chunk.len();
        }
        Ok(out)
    }

    /// Writes the folded rows to `exposures_current`: stages them once, then
    /// merges them in place with one upsert (`statements::upsert_current`).
    pub(super) async fn upsert_folded(&self, rows: Vec<fold::Folded>) -> Result<UpsertedExposures> {
        let session = self.session;
        if rows.is_empty() {
            return Ok(UpsertedExposures::default());
        }
        session
            .execute(&statements::clear(StageCurrent::Table))
            .await?;
        // PostgreSQL: in batches, each statement's typed values built from the
        // folds as the statement is (`statements::insert_rows`): a row of typed
        // values takes several times the memory of the fold, and a file can
        // touch 100k keys.
        let mut folded = rows.into_iter();
        loop {
            let rows: Vec<_> = folded.by_ref().take(STAGE_BATCH).collect();
            if rows.is_empty() {
                break;
            }
            stage_rows(session, "stage_current", rows).await?;
        }
        merge_staged(session).await
    }
}

/// Fills the (emptied) temporary staging table `table` with `rows` with
/// multi-row inserts (PostgreSQL; DuckDB uses the Appender, see `stage.rs`).
async fn stage_rows<R: stage::Row>(
    session: &Session,
    table: &'static str,
    rows: Vec<R>,
) -> Result<()> {
    for batch in stage::postgres_batches(rows) {
        let insert = statements::insert_rows(Alias::new(table), batch).map_err(internal)?;
        session.execute(&insert).await?;
    }
    Ok(())
}

/// Writes the chunk's events that are not stored yet to `exposure_events`
/// (PostgreSQL, where the insert itself says which ids were new); returns
/// their positions within the chunk.
async fn insert_chunk(session: &Session, chunk: &[ExposureEvent]) -> Result<Vec<usize>> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(chunk.len());
    let candidates: Vec<usize> = (0..chunk.len())
        .filter(|&i| seen.insert(chunk[i].event_id.as_str()))
        .collect();
    let rows = candidates.iter().map(|&i| &chunk[i]).collect();
    let mut inserted: HashSet<String> = HashSet::with_capacity(candidates.len());
    for batch in stage::postgres_batches(rows) {
        let insert = statements::insert_new_events(batch).map_err(internal)?;
        for row in session.query_all(&insert).await? {
            inserted.insert(row.try_get("", "event_id")?);
        }
    }
    Ok(candidates
        .into_iter()
        .filter(|&i| inserted.contains(&chunk[i].event_id))
        .collect())
}

/// Merges the rows of `stage_current` into `exposures_current` with one
/// upsert (`statements::upsert_current`); returns how many keys it
/// inserted and updated.
async fn merge_staged(session: &Session) -> Result<UpsertedExposures> {
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
