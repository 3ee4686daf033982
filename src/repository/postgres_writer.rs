//! The PostgreSQL half of the write path: other processes write at the
//! same time, so the inserts themselves say which events were new.

use std::collections::HashSet;

use sea_orm::ConnectionTrait;
use sea_query::Alias;

use super::{internal, stage, statements};
use crate::db::Session;
use crate::error::Result;
use crate::event::ExposureEvent;

/// Fills the (emptied) temporary staging table `table` with `rows` with
/// multi-row inserts (PostgreSQL; DuckDB uses the Appender, see `stage.rs`).
pub(super) async fn stage_rows<const N: usize>(
    session: &Session,
    table: &'static str,
    columns: [sea_query::DynIden; N],
    rows: Vec<[sea_query::Value; N]>,
) -> Result<()> {
    for batch in stage::postgres_batches(rows) {
        let insert =
            statements::insert_rows(Alias::new(table), columns.clone(), batch).map_err(internal)?;
        session.execute(&insert).await?;
    }
    Ok(())
}

/// Writes the chunk's events that are not stored yet to `exposure_events`
/// (PostgreSQL, where the insert itself says which ids were new); returns
/// their positions within the chunk.
pub(super) async fn insert_chunk(session: &Session, chunk: &[ExposureEvent]) -> Result<Vec<usize>> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(chunk.len());
    let candidates: Vec<usize> = (0..chunk.len())
        .filter(|&i| seen.insert(chunk[i].event_id.as_str()))
        .collect();
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
    Ok(candidates
        .into_iter()
        .filter(|&i| inserted.contains(&chunk[i].event_id))
        .collect())
}
