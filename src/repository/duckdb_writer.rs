//! The DuckDB half of the write path: the audit log is appended with the
//! Appender, as Arrow record batches, and its ids are looked up once, when
//! the call ends (`append.rs`).

use duckdb::arrow::record_batch::RecordBatch;

use super::append::{self, LogAppend};
use super::{PreparedChunk, columns};
use crate::db::Session;
use crate::error::{Error, Result};
use crate::event::ExposureEvent;

/// Events of a chunk not appended before in the unit of work, with their
/// keys, positions in the chunk and, when they are the whole chunk, its
/// prepared record batch.
#[derive(Debug, Default)]
pub(super) struct NewEvents {
    pub(super) events: Vec<ExposureEvent>,
    keys: Vec<u64>,
    pub(super) positions: Vec<usize>,
    batch: Option<RecordBatch>,
}

impl NewEvents {
    /// The record batch to append (the prepared one, or one built from the
    /// events kept) and the events.
    pub(super) fn into_parts(self) -> Result<(RecordBatch, Vec<ExposureEvent>)> {
        let batch = match self.batch {
            Some(batch) => batch,
            None => columns::events(&self.events, &self.keys)?,
        };
        Ok((batch, self.events))
    }
}

/// Keeps the events of `chunk` whose ids `log` has not appended yet (and
/// records them as appended).
pub(super) fn log_new_events(log: &mut LogAppend, chunk: PreparedChunk) -> NewEvents {
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

/// Appends `batch` (events and their keys) to `exposure_events` (DuckDB).
pub(super) async fn append_to_log(session: &Session, batch: RecordBatch) -> Result<()> {
    let Some(duckdb) = session.duckdb() else {
        return Err(Error::Internal(
            "the DuckDB append ran on PostgreSQL".into(),
        ));
    };
    duckdb
        .with_raw(move |conn| append::append_batch(conn, batch))
        .await?;
    Ok(())
}

/// As [`append_to_log`], as a task of its own, inside `transaction` only:
/// statements sent on the session meanwhile may run before it, so the
/// caller awaits it before its next statement.
pub(super) fn spawn_append(
    session: &Session,
    transaction: Option<duckdb_adapter::Transaction>,
    batch: RecordBatch,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let (Some(duckdb), Some(transaction)) = (session.duckdb(), transaction) else {
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
