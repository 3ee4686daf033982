//! Checking, after the commit, that the audit log holds exactly what an
//! ingestion appended (DuckDB).
//!
//! DuckDB 2.0.0 was seen to commit the wrong rows: after a failed COMMIT,
//! the next transaction of the same instance stored rows of the failed one
//! in place of its own, and reported success. So an ingest is reported done
//! only after a fresh connection, in a new transaction, finds that the
//! audit log grew by exactly the number of events appended, and that the
//! rows it grew by are exactly the appended ids.
//!
//! A transaction's appends get the row ids after every row committed
//! before it (its `first_rowid`): the check reads only that tail, so its
//! cost follows the file, not the database.

use sea_orm::ConnectionTrait;

use super::statements;
use crate::db::Database;
use crate::error::{Error, Result};

/// The ids an ingestion appended to `exposure_events`, kept compactly (one
/// buffer, no allocation per id): about 45 bytes per event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct IdList {
    text: String,
    ends: Vec<usize>,
}

impl IdList {
    pub(crate) fn push(&mut self, id: &str) {
        self.text.push_str(id);
        self.ends.push(self.text.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The `i`-th id.
    pub(crate) fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = match i.checked_sub(1) {
            Some(previous) => *self.ends.get(previous)?,
            None => 0,
        };
        self.text.get(start..end)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .filter_map(|(start, end)| self.text.get(start..end))
    }
}

/// What an ingestion appended to the audit log, to be checked after its
/// commit with [`super::ExposureRepository::check_appended`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Rows of `exposure_events` when the ingestion's transaction started.
    pub(crate) events_before: u64,
    /// The row id after the last row committed then.
    pub(crate) first_rowid: i64,
    /// The appended ids.
    pub(crate) ids: IdList,
}

impl Appended {
    /// How many events were appended.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.ids.len() as u64
    }

    /// Whether nothing was appended.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ids.len() == 0
    }
}

/// Reads, on a fresh connection of `db`'s DuckDB instance, how many rows
/// `exposure_events` has and how many of those at or after `appended.first_rowid`
/// are among the appended ids; both must match. A mismatch fails the
/// instance (it is reopened from disk before its next use) and is returned
/// as [`Error::EngineFailed`]. A no-op on PostgreSQL.
pub(crate) async fn check_appended(db: &Database, appended: Appended) -> Result<()> {
    let Some(instance) = db.instance() else {
        return Ok(());
    };
    let (events_before, first_rowid, appended_len) =
        (appended.events_before, appended.first_rowid, appended.len());
    let conn = instance.connect()?;
    ConnectionTrait::execute(&conn, &statements::create_check_ids()).await?;
    // The ids move to the blocking task: no copy of a list that holds a
    // whole file's ids.
    let ids = appended.ids;
    conn.with_raw(move |raw| super::stage::append_ids(raw, "check_ids", ids.len(), ids.iter()))
        .await?;
    let row = ConnectionTrait::query_one(&conn, &statements::count_appended(first_rowid))
        .await?
        .ok_or_else(|| {
            Error::Internal("the check of the appended events returned no row".into())
        })?;
    let total: i64 = row.try_get("", "total")?;
    let found: i64 = row.try_get("", "found")?;
    let expected_total = events_before + appended_len;
    if u64::try_from(total).ok() == Some(expected_total)
        && u64::try_from(found).ok() == Some(appended_len)
    {
        return Ok(());
    }
    let reason = format!(
        "after the commit the audit log does not hold exactly the file's new events: \
         expected {} rows ({} before + {} appended), found {total}, of which {found} of the \
         appended ids at or after row {first_rowid}",
        expected_total, events_before, appended_len,
    );
    instance.fail(&reason);
    Err(Error::EngineFailed(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_give_back_what_was_pushed() {
        let mut ids = IdList::default();
        for id in ["a", "", "ccc", "é✓"] {
            ids.push(id);
        }
        assert_eq!(ids.len(), 4);
        assert_eq!(ids.iter().collect::<Vec<_>>(), ["a", "", "ccc", "é✓"]);
    }
}
