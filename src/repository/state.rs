//! The current state computed from the audit log in one set-based
//! statement, and the two tools built on it: `verify` (compare) and
//! `rebuild` (replace what differs).
//!
//! The statement groups `exposure_events` by key and picks, per column, the
//! value of the greatest event by `(timestamp, event_id)` (for a detail:
//! the greatest event in which it is not NULL), as `fold.rs` defines. It is
//! engine-specific SQL, so it is written here as text rather than with
//! sea-query. Both rank each key's events by `(timestamp, event_id)` with
//! one window (PostgreSQL comparing ids under the `"C"` collation, i.e.
//! byte-wise); DuckDB then picks with `arg_max(value, rank)`, which skips
//! NULL values, PostgreSQL with `MAX(value) FILTER (WHERE rank = r)`, where
//! `r` is the rank of the greatest event (having the detail), from a second
//! window over the key. The text holds identifiers of this
//! schema only, never a value.

use infra::Engine;
use sea_orm::{ConnectionTrait, Statement};
use sea_query::{Expr, ExprTrait, Func, Iden, Order, Query};
use serde::Serialize;

use super::statements::{DETAIL_COLUMNS, StoredId, current_like, drop_temporary};
use crate::db::Session;
use crate::entity::exposure_current::{self, Column as Cur};
use crate::entity::{exposure_event, quarantined_file};
use crate::error::Result;
use sea_orm::{DerivePartialModel, EntityName, FromQueryResult, IdenStatic, Iterable};

/// How many duplicate ids or keys a report names at most.
const DUPLICATES_SHOWN: u64 = 100;

/// What [`ExposureRepository::verify`](super::ExposureRepository::verify)
/// found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Rows read from `exposure_events`.
    pub events: u64,
    /// Rows read from `exposures_current`.
    pub exposures: u64,
    /// Rows read from `quarantined_files`.
    pub quarantined_files: u64,
    /// Event ids stored more than once (at most 100 shown).
    pub duplicate_event_ids: Vec<String>,
    /// Keys of `exposures_current` stored more than once (at most 100).
    pub duplicate_keys: Vec<(String, String)>,
    /// Keys whose stored current state differs from the one the log gives,
    /// by office and exposure id.
    pub differences: Vec<Difference>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.duplicate_event_ids.is_empty()
            && self.duplicate_keys.is_empty()
            && self.differences.is_empty()
    }
}

/// What [`ExposureRepository::rebuild`](super::ExposureRepository::rebuild)
/// changed: the differences it found and replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    /// Each key that was written or removed, and why.
    pub changed: Vec<Difference>,
}

impl RebuildReport {
    /// Keys of `kind` among the changes.
    #[must_use]
    pub fn count(&self, kind: DifferenceKind) -> usize {
        self.changed.iter().filter(|d| d.kind == kind).count()
    }
}

/// One key whose stored current state is not the log's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Office of the key.
    pub office_id: String,
    /// Exposure of the key.
    pub exposure_id: String,
    /// How it differs.
    pub kind: DifferenceKind,
    /// For [`DifferenceKind::Differs`]: the columns whose values differ.
    pub columns: Vec<String>,
}

/// How a key's stored current state differs from the log's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// The log has events of the key, `exposures_current` no row.
    Missing,
    /// `exposures_current` has a row, the log no event of the key.
    Unexpected,
    /// Both have it, with different values.
    Differs,
}

impl DifferenceKind {
    /// `missing`, `unexpected` or `differs`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Unexpected => "unexpected",
            Self::Differs => "differs",
        }
    }
}

/// A key of `exposures_current` read back by the names of its columns (a
/// partial model of the entity).
#[derive(Debug, DerivePartialModel)]
#[sea_orm(entity = "exposure_current::Entity")]
struct CurrentKey {
    office_id: String,
    exposure_id: String,
}

/// The temporary table `rebuild` computes the state into.
#[derive(Iden, Clone, Copy)]
enum RebuiltCurrent {
    Table,
}

/// A quoted identifier.
fn q(name: impl AsRef<str>) -> String {
    format!("\"{}\"", name.as_ref())
}

/// A column's name.
fn n(c: Cur) -> &'static str {
    c.as_str()
}

/// The columns of `exposures_current`, quoted, in the entity's order (the
/// order of every `SELECT` list built here from `Cur::iter()`).
fn current_columns() -> String {
    Cur::iter().map(|c| q(n(c))).collect::<Vec<_>>().join(", ")
}

/// The column of `exposure_events` a current-state column is computed
/// from, and, for a detail's columns, the detail (only events where it is
/// not NULL count).
fn source(c: Cur) -> (&'static str, Option<&'static str>) {
    let (timestamp, event_id) = (
        exposure_event::Column::Timestamp.as_str(),
        exposure_event::Column::EventId.as_str(),
    );
    for (value, at, id) in DETAIL_COLUMNS {
        if n(c) == n(value) {
            return (n(value), Some(n(value)));
        }
        if n(c) == n(at) {
            return (timestamp, Some(n(value)));
        }
        if n(c) == n(id) {
            return (event_id, Some(n(value)));
        }
    }
    match c {
        Cur::LastEventId => (event_id, None),
        _ => (n(c), None),
    }
}

/// `SELECT <every current column> FROM exposure_events GROUP BY the key`:
/// the current state as the log defines it (see `fold.rs`).
fn state_from_log(engine: Engine) -> String {
    state_of(engine, &q(exposure_event::Entity.table_name()))
}

/// `INSERT INTO stage_current (...) <the state of the rows of
/// exposure_events at or after row id $1>` (DuckDB): the fold of what an
/// ingestion appended, computed by the database (see `Ingestion::finish`).
pub(super) fn stage_state_of_appended(first_rowid: i64) -> Statement {
    let events = format!(
        "(SELECT * FROM {} WHERE rowid >= $1)",
        q(exposure_event::Entity.table_name())
    );
    let columns = current_columns();
    Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        format!(
            "INSERT INTO {} ({columns}) {}",
            q(super::statements::StageCurrent::Table.to_string()),
            state_of(Engine::DuckDb, &events)
        ),
        [first_rowid.into()],
    )
}

/// The state of the events of `events` (a table name or a parenthesised
/// query), one row per key; see [`state_from_log`].
fn state_of(engine: Engine, events: &str) -> String {
    let (ts, id) = (
        q(exposure_event::Column::Timestamp.as_str()),
        q(exposure_event::Column::EventId.as_str()),
    );
    let (office, exposure) = (q(n(Cur::OfficeId)), q(n(Cur::ExposureId)));
    let rank = q("event_rank");
    // The rank, within its key, of the greatest event where `detail` is not
    // NULL (PostgreSQL; `None`: of the greatest event).
    let rank_of = |detail: Option<&str>| match detail {
        Some(d) => q(format!("{d}_rank")),
        None => q("last_rank"),
    };
    let pick = |column: &str, detail: Option<&str>| -> String {
        let column = q(column);
        match (engine, detail) {
            // `arg_max` skips rows whose value is NULL.
            (Engine::DuckDb, Some(d)) if q(d) != column => format!(
                "arg_max(CASE WHEN {} IS NOT NULL THEN {column} END, {rank})",
                q(d)
            ),
            (Engine::DuckDb, _) => format!("arg_max({column}, {rank})"),
            (Engine::Postgres, _) => {
                format!("MAX({column}) FILTER (WHERE {rank} = {})", rank_of(detail))
            }
        }
    };
    let columns: Vec<String> = Cur::iter()
        .map(|c| {
            let expr = match c {
                Cur::OfficeId | Cur::ExposureId => q(n(c)),
                Cur::FirstSeen => format!("MIN({ts})"),
                Cur::LastSeen => format!("MAX({ts})"),
                _ => {
                    let (from, detail) = source(c);
                    pick(from, detail)
                }
            };
            format!("{expr} AS {}", q(n(c)))
        })
        .collect();
    // Each event's rank within its key, in `(timestamp, event_id)` order:
    // one sort, after which every pick compares integers. (DuckDB took 13
    // times as long, and gigabytes, comparing `row(timestamp, event_id)` in
    // each of the 30 aggregates; PostgreSQL three times as long with an
    // ordered `array_agg` per column.)
    let ranked = format!(
        "SELECT *, row_number() OVER (PARTITION BY {office}, {exposure} \
         ORDER BY {ts}, {id}{collate}) AS {rank} FROM {events} AS logged",
        collate = match engine {
            Engine::DuckDb => "",
            Engine::Postgres => " COLLATE \"C\"",
        },
    );
    let from = match engine {
        Engine::DuckDb => format!("({ranked}) AS e"),
        // Then, per key, the rank of the greatest event and of the greatest
        // event having each detail, which the picks select by.
        Engine::Postgres => {
            let key = format!("OVER (PARTITION BY {office}, {exposure})");
            let mut ranks = vec![format!("MAX({rank}) {key} AS {}", rank_of(None))];
            for (value, _, _) in DETAIL_COLUMNS {
                ranks.push(format!(
                    "MAX(CASE WHEN {} IS NOT NULL THEN {rank} END) {key} AS {}",
                    q(n(value)),
                    rank_of(Some(n(value)))
                ));
            }
            format!("(SELECT *, {} FROM ({ranked}) AS r) AS e", ranks.join(", "))
        }
    };
    format!(
        "SELECT {} FROM {from} GROUP BY {office}, {exposure}",
        columns.join(", "),
    )
}

/// The keys where `exposures_current` and `source` (a table or a
/// parenthesised query with the current columns) disagree: `office_id`,
/// `exposure_id`, `missing`, `unexpected`, then one boolean per column
/// (`d_<column>`: the values differ).
fn differences_sql(source: &str) -> String {
    let (office, exposure) = (q(n(Cur::OfficeId)), q(n(Cur::ExposureId)));
    let distinct = |c: Cur| format!("c.{0} IS DISTINCT FROM s.{0}", q(n(c)));
    let compared: Vec<Cur> = Cur::iter()
        .filter(|c| !matches!(c, Cur::OfficeId | Cur::ExposureId))
        .collect();
    let flags: Vec<String> = compared
        .iter()
        .map(|&c| format!("{} AS {}", distinct(c), q(format!("d_{}", n(c)))))
        .collect();
    let any: Vec<String> = compared.iter().map(|&c| distinct(c)).collect();
    format!(
        "SELECT COALESCE(c.{office}, s.{office}) AS {office}, \
         COALESCE(c.{exposure}, s.{exposure}) AS {exposure}, \
         c.{office} IS NULL AS \"missing\", s.{office} IS NULL AS \"unexpected\", {flags} \
         FROM {current} AS c FULL OUTER JOIN {source} AS s \
         ON c.{office} = s.{office} AND c.{exposure} = s.{exposure} \
         WHERE c.{office} IS NULL OR s.{office} IS NULL OR {any} \
         ORDER BY 1, 2",
        flags = flags.join(", "),
        current = q(exposure_current::Entity.table_name()),
        any = any.join(" OR "),
    )
}

async fn differences(session: &Session, source: &str) -> Result<Vec<Difference>> {
    let sql = differences_sql(source);
    let rows = session
        .query_all_raw(Statement::from_string(session.get_database_backend(), sql))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let kind = if row.try_get::<bool>("", "missing")? {
            DifferenceKind::Missing
        } else if row.try_get::<bool>("", "unexpected")? {
            DifferenceKind::Unexpected
        } else {
            DifferenceKind::Differs
        };
        let mut columns = Vec::new();
        if kind == DifferenceKind::Differs {
            for c in Cur::iter() {
                if matches!(c, Cur::OfficeId | Cur::ExposureId) {
                    continue;
                }
                if row.try_get::<bool>("", &format!("d_{}", n(c)))? {
                    columns.push(n(c).to_owned());
                }
            }
        }
        let key = CurrentKey::from_query_result(&row, "")?;
        out.push(Difference {
            office_id: key.office_id,
            exposure_id: key.exposure_id,
            kind,
            columns,
        });
    }
    Ok(out)
}

/// Reads every value of every column of `table` (so that a damaged block
/// or segment fails here) and returns its row count.
async fn read_all(session: &Session, table: &str, columns: Vec<String>) -> Result<u64> {
    let digest = match session.engine() {
        Engine::DuckDb => format!(
            "CAST(SUM(hash({}) % 1024) AS BIGINT)",
            columns.iter().map(q).collect::<Vec<_>>().join(", ")
        ),
        // The whole row as text reads every column, TOASTed ones included.
        Engine::Postgres => "CAST(SUM(LENGTH(CAST(t AS TEXT))) AS BIGINT)".to_owned(),
    };
    let sql = format!(
        "SELECT COUNT(*) AS n, {digest} AS digest FROM {} AS t",
        q(table)
    );
    let row = session
        .query_one_raw(Statement::from_string(session.get_database_backend(), sql))
        .await?;
    let rows = match row {
        Some(row) => row.try_get::<i64>("", "n")?,
        None => 0,
    };
    Ok(u64::try_from(rows).unwrap_or(0))
}

fn column_names<E: sea_orm::EntityTrait>() -> Vec<String> {
    E::Column::iter().map(|c| c.as_str().to_owned()).collect()
}

/// `SELECT columns FROM table GROUP BY columns HAVING COUNT(*) > 1 ORDER
/// BY columns LIMIT 100`: values stored more than once.
fn stored_twice<C: sea_query::IntoIden + Copy>(
    table: impl sea_query::IntoIden,
    columns: &[C],
) -> sea_query::SelectStatement {
    let mut select = Query::select();
    select.from(table);
    for &c in columns {
        select.column(c).group_by_col(c).order_by(c, Order::Asc);
    }
    select
        .and_having(Func::count(Expr::col(sea_query::Asterisk)).gt(1))
        .limit(DUPLICATES_SHOWN)
        .to_owned()
}

/// See [`ExposureRepository::verify`](super::ExposureRepository::verify).
pub(super) async fn verify(session: &Session) -> Result<VerifyReport> {
    let events = read_all(
        session,
        exposure_event::Entity.table_name(),
        column_names::<exposure_event::Entity>(),
    )
    .await?;
    let exposures = read_all(
        session,
        exposure_current::Entity.table_name(),
        column_names::<exposure_current::Entity>(),
    )
    .await?;
    let quarantined_files = read_all(
        session,
        quarantined_file::Entity.table_name(),
        column_names::<quarantined_file::Entity>(),
    )
    .await?;

    let ids = stored_twice(exposure_event::Entity, &[exposure_event::Column::EventId]);
    let duplicate_event_ids = session
        .query_all(&ids)
        .await?
        .iter()
        .map(|row| StoredId::from_query_result(row, "").map(|id| id.event_id))
        .collect::<Result<_, _>>()?;
    let keys = stored_twice(exposure_current::Entity, &[Cur::OfficeId, Cur::ExposureId]);
    let duplicate_keys = session
        .query_all(&keys)
        .await?
        .iter()
        .map(|row| CurrentKey::from_query_result(row, "").map(|k| (k.office_id, k.exposure_id)))
        .collect::<Result<_, _>>()?;

    let state = format!("({})", state_from_log(session.engine()));
    Ok(VerifyReport {
        events,
        exposures,
        quarantined_files,
        duplicate_event_ids,
        duplicate_keys,
        differences: differences(session, &state).await?,
    })
}

/// See [`ExposureRepository::rebuild`](super::ExposureRepository::rebuild).
pub(super) async fn rebuild(session: &Session) -> Result<RebuildReport> {
    let backend = session.get_database_backend();
    // Created here and dropped at the end (or rolled back with the unit
    // of work): it never outlives one rebuild.
    session
        .execute(&current_like(RebuiltCurrent::Table))
        .await?;
    let rebuilt = q(RebuiltCurrent::Table.to_string());
    let columns = current_columns();
    session
        .execute_raw(Statement::from_string(
            backend,
            format!(
                "INSERT INTO {rebuilt} ({columns}) {}",
                state_from_log(session.engine())
            ),
        ))
        .await?;
    let changed = differences(session, &rebuilt).await?;
    if !changed.is_empty() {
        replace_differences(session, &rebuilt).await?;
    }
    session
        .execute(&drop_temporary(RebuiltCurrent::Table))
        .await?;
    Ok(RebuildReport { changed })
}

/// Makes `exposures_current` equal the state in `rebuilt`.
async fn replace_differences(session: &Session, rebuilt: &str) -> Result<()> {
    let backend = session.get_database_backend();
    let columns = current_columns();
    // In place: rows that differ are updated, missing ones inserted, and
    // rows without events deleted (no delete-and-reinsert of stored keys,
    // which DuckDB 2.0.0 does not survive; see the README).
    let current = q(exposure_current::Entity.table_name());
    let (office, exposure) = (q(n(Cur::OfficeId)), q(n(Cur::ExposureId)));
    let assignments: Vec<String> = Cur::iter()
        .filter(|c| !matches!(c, Cur::OfficeId | Cur::ExposureId))
        .map(|c| format!("{0} = excluded.{0}", q(n(c))))
        .collect();
    let differs: Vec<String> = Cur::iter()
        .filter(|c| !matches!(c, Cur::OfficeId | Cur::ExposureId))
        .map(|c| format!("{current}.{0} IS DISTINCT FROM excluded.{0}", q(n(c))))
        .collect();
    session
        .execute_raw(Statement::from_string(
            backend,
            format!(
                "INSERT INTO {current} ({columns}) SELECT {columns} FROM {rebuilt} \
                 ORDER BY {office}, {exposure} \
                 ON CONFLICT ({office}, {exposure}) DO UPDATE SET {} WHERE {}",
                assignments.join(", "),
                differs.join(" OR ")
            ),
        ))
        .await?;
    session
        .execute_raw(Statement::from_string(
            backend,
            format!(
                "DELETE FROM {current} WHERE NOT EXISTS (SELECT 1 FROM {rebuilt} AS r \
                 WHERE r.{office} = {current}.{office} AND r.{exposure} = {current}.{exposure})"
            ),
        ))
        .await?;
    Ok(())
}

/// Whether `exposures_current` has rows without provenance (written before
/// migration 5), which [`rebuild`] fills.
pub(crate) async fn lacks_provenance(conn: &impl ConnectionTrait) -> Result<bool> {
    let probe = Query::select()
        .expr(Expr::val(1))
        .from(exposure_current::Entity)
        .and_where(Expr::col(Cur::LastEventId).is_null())
        .limit(1)
        .to_owned();
    Ok(conn.query_one(&probe).await?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_statements_name_every_current_column_once() {
        for engine in [Engine::DuckDb, Engine::Postgres] {
            let sql = state_from_log(engine);
            for c in Cur::iter() {
                let alias = format!(" AS {},", q(n(c)));
                let last = format!(" AS {} FROM", q(n(c)));
                assert_eq!(
                    sql.matches(&alias).count() + sql.matches(&last).count(),
                    1,
                    "{}: {sql}",
                    n(c)
                );
            }
            assert!(!sql.contains('$') && !sql.contains('\''), "{sql}");
        }
        let pg = state_from_log(Engine::Postgres);
        for part in [
            r#"MAX("hostname") FILTER (WHERE "event_rank" = "hostname_rank") AS "hostname""#,
            r#"MAX("timestamp") FILTER (WHERE "event_rank" = "dst_port_rank") AS "dst_port_seen_at""#,
            r#"MAX("event_id") FILTER (WHERE "event_rank" = "last_rank") AS "last_event_id""#,
            r#"MAX(CASE WHEN "dst_port" IS NOT NULL THEN "event_rank" END) OVER (PARTITION BY "office_id", "exposure_id") AS "dst_port_rank""#,
            r#"ORDER BY "timestamp", "event_id" COLLATE "C") AS "event_rank""#,
        ] {
            assert!(pg.contains(part), "{part} not in {pg}");
        }
        let duck = state_from_log(Engine::DuckDb);
        for part in [
            r#"arg_max(CASE WHEN "dst_port" IS NOT NULL THEN "event_id" END, "event_rank") AS "dst_port_event_id""#,
            r#"arg_max("event_id", "event_rank") AS "last_event_id""#,
            r#"row_number() OVER (PARTITION BY "office_id", "exposure_id" ORDER BY "timestamp", "event_id") AS "event_rank""#,
        ] {
            assert!(duck.contains(part), "{part} not in {duck}");
        }
    }
}
