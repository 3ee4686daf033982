//! Appending to the audit log on DuckDB, where no index enforces that an
//! event id is stored once (migration `m20261128_000006`: an ART index is
//! kept whole in memory while it is maintained, and its cost grew with
//! every million events stored).
//!
//! A unit of work instead
//!
//! 1. appends each id at most once (the ids it appended are remembered by
//!    their 64-bit `event_key`, and a key seen before is confirmed by
//!    comparing the full ids);
//! 2. when it has appended everything, looks all its keys up once among
//!    the rows committed before it started (rows below `first_rowid`; a
//!    unit of work's own rows have row ids above every committed one): a
//!    scan of one 8-byte column, the cost of a few milliseconds per million
//!    events stored, whatever the size of the file;
//! 3. compares the full ids of the rows whose key matched (or that have no
//!    key: rows written by another tool); the ids found are events stored
//!    already, which it then removes from what it appended.
//!
//! Writers of one database take turns (`Session::take_write_turn`), so no
//! other writer commits between the start of a unit of work and its commit.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use md5::{Digest, Md5};
use sea_orm::{ConnectionTrait, FromQueryResult, IdenStatic, Iterable, Statement};

use super::check::IdList;
use super::statements::{self, EVENT_KEY, StageIds, StageKeys, StoredId};
use crate::db::Session;
use crate::entity::exposure_event;
use crate::error::{Error, Result};

/// The upper 64 bits of the MD5 of `event_id`, as DuckDB computes them with
/// `(md5_number(event_id) >> 64)::UBIGINT` ([`migration::EVENT_KEY_SQL`]):
/// the little-endian number in bytes 8 to 15 of the digest.
#[must_use]
pub fn event_key(event_id: &str) -> u64 {
    let digest = Md5::digest(event_id.as_bytes());
    let mut upper = [0; 8];
    upper.copy_from_slice(&digest[8..16]);
    u64::from_le_bytes(upper)
}

/// What one unit of work appended to the audit log on DuckDB.
#[derive(Debug, Default)]
pub(crate) struct LogAppend {
    /// Rows of the log when the unit of work started.
    pub(crate) events_before: u64,
    /// The row id after the last committed row when the unit of work
    /// started: the rows below are the stored log.
    pub(crate) first_rowid: i64,
    /// The appended ids, in order.
    pub(crate) ids: IdList,
    /// Their keys, in the same order.
    keys: Vec<u64>,
    /// A key's first appended id (its position in `ids`). The keys are
    /// MD5 bits already, so a fast (seeded) hash does.
    by_key: HashMap<u64, u32, foldhash::fast::RandomState>,
    /// Further appended ids whose key another one has (a 64-bit key is
    /// shared by two ids about once in 4 billion pairs).
    shared: HashMap<u64, Vec<u32>>,
}

impl LogAppend {
    /// Starts appending inside `session`.
    pub(crate) async fn start(session: &Session) -> Result<Self> {
        let row = session
            .query_one(&statements::log_extent())
            .await?
            .ok_or_else(|| Error::Internal("the log's extent query returned no row".into()))?;
        let events: i64 = row.try_get("", "events")?;
        Ok(Self {
            events_before: u64::try_from(events).unwrap_or(0),
            first_rowid: row.try_get("", "next_rowid")?,
            ..Self::default()
        })
    }

    /// Records `id` (with its `key`) as appended, unless this unit of work
    /// appended it already; says whether it is new.
    pub(crate) fn admit(&mut self, id: &str, key: u64) -> bool {
        if self.contains(id, key) {
            return false;
        }
        let position = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        match self.by_key.entry(key) {
            Entry::Vacant(first) => {
                first.insert(position);
            }
            Entry::Occupied(_) => self.shared.entry(key).or_default().push(position),
        }
        self.ids.push(id);
        self.keys.push(key);
        true
    }

    /// Whether `id` is among the appended ids.
    fn contains(&self, id: &str, key: u64) -> bool {
        let Some(&first) = self.by_key.get(&key) else {
            return false;
        };
        std::iter::once(first)
            .chain(self.shared.get(&key).into_iter().flatten().copied())
            .any(|position| self.ids.get(position as usize) == Some(id))
    }

    /// The appended ids that were stored before this unit of work started.
    pub(crate) async fn stored_before(&self, session: &Session) -> Result<HashSet<String>> {
        if self.keys.is_empty() {
            return Ok(HashSet::new());
        }
        session
            .execute(&statements::clear(StageKeys::Table))
            .await?;
        let keys = self.keys.clone();
        if let Some(duckdb) = session.duckdb() {
            duckdb
                .with_raw(move |conn| super::stage::append_keys(conn, &keys))
                .await?;
        }
        let candidates = session
            .query_one(&statements::count_key_matches(self.first_rowid))
            .await?
            .map(|row| row.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0);
        if candidates == 0 {
            return Ok(HashSet::new());
        }
        let (sql, values) = statements::ids_of_key_matches(self.first_rowid);
        let mut stored = HashSet::new();
        for row in session
            .query_all_raw(Statement::from_sql_and_values(
                session.get_database_backend(),
                sql,
                values,
            ))
            .await?
        {
            let StoredId { event_id } = StoredId::from_query_result(&row, "")?;
            if self.contains(&event_id, event_key(&event_id)) {
                stored.insert(event_id);
            }
        }
        Ok(stored)
    }

    /// Removes the appended rows of `repeats` (ids stored before, see
    /// [`LogAppend::stored_before`]) from the log and from this record.
    pub(crate) async fn remove(
        &mut self,
        session: &Session,
        repeats: &HashSet<String>,
    ) -> Result<()> {
        if repeats.is_empty() {
            return Ok(());
        }
        session.execute(&statements::clear(StageIds::Table)).await?;
        let ids: Vec<String> = repeats.iter().cloned().collect();
        if let Some(duckdb) = session.duckdb() {
            duckdb
                .with_raw(move |conn| {
                    super::stage::append_ids(
                        conn,
                        "stage_ids",
                        ids.len(),
                        ids.iter().map(String::as_str),
                    )
                })
                .await?;
        }
        session
            .execute(&statements::delete_appended(self.first_rowid))
            .await?;
        let kept = std::mem::take(self);
        *self = Self {
            events_before: kept.events_before,
            first_rowid: kept.first_rowid,
            ..Self::default()
        };
        for (id, key) in kept.ids.iter().zip(kept.keys) {
            if !repeats.contains(id) {
                self.admit(id, key);
            }
        }
        Ok(())
    }
}

/// The names of the columns [`append_batch`] fills: those of the entity,
/// then `event_key`.
pub(super) fn append_columns() -> Vec<&'static str> {
    exposure_event::Column::iter()
        .map(|c| c.as_str())
        .chain([EVENT_KEY])
        .collect()
}

/// Appends `batch` (events with their keys, built by `columns::events`) to
/// `exposure_events` with DuckDB's Appender.
///
/// # Errors
/// DuckDB's error (a value its column refuses).
pub(crate) fn append_batch(
    conn: &duckdb::Connection,
    batch: duckdb::arrow::record_batch::RecordBatch,
) -> duckdb_adapter::Result<()> {
    if batch.num_rows() == 0 {
        return Ok(());
    }
    let mut appender = conn.appender_with_columns("exposure_events", &append_columns())?;
    appender.append_record_batch(batch)?;
    Ok(appender.flush()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_upper_half_of_the_md5() {
        // md5("abc") = 900150983cd24fb0 d6963f7d28e17f72; DuckDB's
        // md5_number reads the digest little-endian.
        assert_eq!(event_key("abc"), 0x727f_e128_7d3f_96d6);
    }

    #[test]
    fn keys_are_what_duckdb_computes_with_the_migrations_expression()
    -> Result<(), Box<dyn std::error::Error>> {
        let conn = duckdb::Connection::open_in_memory()?;
        let sql = format!(
            "SELECT {} FROM (SELECT ? AS event_id)",
            migration::EVENT_KEY_SQL
        );
        let long = "x".repeat(5_000);
        for id in [
            "",
            "a",
            "6a47ad0d-02bd-417e-b95e-9444a8e82ac0",
            "é✓ 😀",
            long.as_str(),
        ] {
            let from_duckdb: u64 = conn.query_row(&sql, [id], |row| row.get(0))?;
            assert_eq!(event_key(id), from_duckdb, "{id:.20}");
        }
        Ok(())
    }

    #[test]
    fn the_event_batch_has_the_appended_columns_in_order() -> Result<(), Box<dyn std::error::Error>>
    {
        let batch = super::super::columns::events(&[], &[])?;
        assert_eq!(super::super::columns::names(&batch), append_columns());
        Ok(())
    }

    #[test]
    fn an_id_is_admitted_once_even_when_keys_collide() {
        let mut log = LogAppend::default();
        assert!(log.admit("a", 7));
        assert!(log.admit("b", 7), "another id with the same key is new");
        assert!(!log.admit("a", 7));
        assert!(!log.admit("b", 7));
        assert!(log.admit("c", 8));
        assert_eq!(log.ids.len(), 3);
        assert_eq!(log.ids.iter().collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
