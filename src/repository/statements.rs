//! Every SQL statement of the repository, built with sea-query. Values are
//! always bound, never formatted into SQL.
//!
//! Staging tables are temporary (private to the unit of work's connection),
//! filled in bulk (see `stage.rs`: DuckDB's Appender, or multi-row inserts
//! built here on PostgreSQL), and feed set-based statements. They stay small
//! on purpose: DuckDB keeps every row written to a temporary table in memory
//! until the transaction ends, even after it is deleted, and a file is one
//! transaction. So the events themselves are appended straight to
//! `exposure_events`; on DuckDB their 64-bit keys (8 bytes an event) are
//! staged once per call for the lookup among the stored ids, and the
//! folded current state (one row per key) is staged once per call.

use sea_orm::{ColumnTrait, DerivePartialModel, IdenStatic, Iterable};
use sea_query::{
    Alias, ColumnDef, Expr, ExprTrait, Func, Iden, InsertStatement, IntoIden, OnConflict, Order,
    Query, SelectStatement, Table, TableCreateStatement,
};

use super::stage::Row;
use crate::entity::exposure_current::{self, Column as Cur};
use crate::entity::exposure_event::{self, Column as Ev};
use crate::event::ExposureEvent;

/// Event ids a DuckDB unit of work appended and found stored already,
/// whose rows it removes again (`append.rs`).
#[derive(Iden, Clone, Copy)]
pub(crate) enum StageIds {
    Table,
}

/// The ids an ingestion appended, staged after its commit on a fresh
/// connection to check that they are stored (`check.rs`).
#[derive(Iden, Clone, Copy)]
pub(crate) enum CheckIds {
    Table,
}

/// The keys of the event ids a unit of work appended (DuckDB, see
/// `append.rs`).
#[derive(Iden, Clone, Copy)]
pub(crate) enum StageKeys {
    Table,
}

/// An event id read back from `exposure_events` (a partial model: the
/// column and its name are the entity's).
#[derive(Debug, DerivePartialModel)]
#[sea_orm(entity = "exposure_event::Entity")]
pub(crate) struct StoredId {
    pub(crate) event_id: String,
}

/// `exposure_events.event_key` on DuckDB (migration 6; not an entity
/// column: PostgreSQL has no such column).
pub(crate) const EVENT_KEY: &str = "event_key";

/// Folded rows, one per key.
#[derive(Iden, Clone, Copy)]
pub(crate) enum StageCurrent {
    Table,
}

/// The stored rows of the staged keys, with their row ids (`rid`), copied
/// by a small merge on DuckDB ([`copy_stored_of_staged`]).
#[derive(Iden, Clone, Copy)]
pub(crate) enum StageStored {
    Table,
    Rid,
}

/// Each optional detail with its provenance: `(value, seen_at, event_id)`,
/// the timestamp and id of the event the value comes from (see `fold.rs`).
pub(crate) const DETAIL_COLUMNS: [(Cur, Cur, Cur); 8] = [
    (Cur::Hostname, Cur::HostnameSeenAt, Cur::HostnameEventId),
    (Cur::AssetIp, Cur::AssetIpSeenAt, Cur::AssetIpEventId),
    (Cur::DstIp, Cur::DstIpSeenAt, Cur::DstIpEventId),
    (Cur::DstPort, Cur::DstPortSeenAt, Cur::DstPortEventId),
    (Cur::Protocol, Cur::ProtocolSeenAt, Cur::ProtocolEventId),
    (
        Cur::ServiceName,
        Cur::ServiceNameSeenAt,
        Cur::ServiceNameEventId,
    ),
    (
        Cur::ServiceProduct,
        Cur::ServiceProductSeenAt,
        Cur::ServiceProductEventId,
    ),
    (
        Cur::ServiceVersion,
        Cur::ServiceVersionSeenAt,
        Cur::ServiceVersionEventId,
    ),
];

/// Taken from the greatest event by `(timestamp, event_id)`, whose id is
/// `last_event_id` and whose timestamp is `last_seen`.
const LATEST_COLUMNS: [Cur; 7] = [
    Cur::ExposureClass,
    Cur::AssetId,
    Cur::Status,
    Cur::Severity,
    Cur::EventAction,
    Cur::RiskScore,
    Cur::LastEventId,
];

fn text(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name).string().to_owned()
}

fn timestamptz(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name).timestamp_with_time_zone().to_owned()
}

/// `CREATE TEMPORARY TABLE IF NOT EXISTS stage_ids (event_id)`.
pub(crate) fn create_stage_ids() -> TableCreateStatement {
    id_table(StageIds::Table)
}

/// `CREATE TEMPORARY TABLE IF NOT EXISTS stage_keys (event_key UBIGINT)`.
pub(crate) fn create_stage_keys() -> TableCreateStatement {
    Table::create()
        .table(StageKeys::Table)
        .temporary()
        .if_not_exists()
        .col(ColumnDef::new(Alias::new(EVENT_KEY)).custom(Alias::new("UBIGINT")))
        .to_owned()
}

/// `SELECT COUNT(*) AS events, COALESCE(MAX(rowid) + 1, 0) AS next_rowid
/// FROM exposure_events` (DuckDB): the rows of the log, and the row id
/// after the last one.
pub(crate) fn log_extent() -> SelectStatement {
    Query::select()
        .expr_as(
            Func::count(Expr::col(sea_query::Asterisk)),
            Alias::new("events"),
        )
        .expr_as(
            Func::coalesce([
                Func::max(Expr::col(Alias::new("rowid"))).add(1),
                Expr::val(0_i64),
            ]),
            Alias::new("next_rowid"),
        )
        .from(exposure_event::Entity)
        .to_owned()
}

/// `rowid < $first_rowid AND (event_key IN (SELECT event_key FROM
/// stage_keys) OR event_key IS NULL)`: committed rows whose key is one of
/// the staged keys, or that have none.
fn key_matches(first_rowid: i64) -> Expr {
    let key = || Expr::col(Alias::new(EVENT_KEY));
    Expr::col(Alias::new("rowid")).lt(first_rowid).and(
        key()
            .in_subquery(
                Query::select()
                    .column(Alias::new(EVENT_KEY))
                    .from(StageKeys::Table)
                    .to_owned(),
            )
            .or(key().is_null()),
    )
}

/// `SELECT COUNT(*) AS n FROM exposure_events WHERE <key_matches>`: reads
/// only the key column (and the row ids).
pub(crate) fn count_key_matches(first_rowid: i64) -> SelectStatement {
    Query::select()
        .expr_as(Func::count(Expr::col(sea_query::Asterisk)), Alias::new("n"))
        .from(exposure_event::Entity)
        .and_where(key_matches(first_rowid))
        .to_owned()
}

/// `SELECT event_id FROM exposure_events WHERE rowid IN (SELECT rowid ...
/// WHERE <key_matches>)`, as SQL and values: the ids of the rows
/// [`count_key_matches`] counts. (Selecting `event_id` in the same scan as
/// the key would read every stored id; by row id only the matched rows'
/// blocks are read, one range for a file sent again.)
pub(crate) fn ids_of_key_matches(first_rowid: i64) -> (String, sea_query::Values) {
    let rowid = || Expr::col(Alias::new("rowid"));
    Query::select()
        .column(Ev::EventId)
        .from(exposure_event::Entity)
        .and_where(
            rowid().in_subquery(
                Query::select()
                    .expr(rowid())
                    .from(exposure_event::Entity)
                    .and_where(key_matches(first_rowid))
                    .to_owned(),
            ),
        )
        .build(sea_query::PostgresQueryBuilder)
}

/// `DELETE FROM exposure_events WHERE rowid >= $first_rowid AND event_id IN
/// (SELECT event_id FROM stage_ids)`: removes rows this unit of work
/// appended (only its own rows are at or after `first_rowid`).
pub(crate) fn delete_appended(first_rowid: i64) -> sea_query::DeleteStatement {
    Query::delete()
        .from_table(exposure_event::Entity)
        .and_where(Expr::col(Alias::new("rowid")).gte(first_rowid))
        .and_where(id_in(StageIds::Table))
        .to_owned()
}

/// `CREATE TEMPORARY TABLE IF NOT EXISTS check_ids (event_id)`.
pub(crate) fn create_check_ids() -> TableCreateStatement {
    id_table(CheckIds::Table)
}

/// `CREATE TEMPORARY TABLE IF NOT EXISTS table (event_id)`.
fn id_table(table: impl IntoIden) -> TableCreateStatement {
    Table::create()
        .table(table)
        .temporary()
        .if_not_exists()
        .col(text(Ev::EventId))
        .to_owned()
}

/// `SELECT (SELECT COUNT(*) FROM exposure_events) AS total, (SELECT
/// COUNT(*) FROM exposure_events WHERE rowid >= $1 AND event_id IN (SELECT
/// event_id FROM check_ids)) AS found`: the audit log's rows, and how many
/// of those at or after row id `first_rowid` are the checked ids (see
/// `check.rs`).
pub(crate) fn count_appended(first_rowid: i64) -> SelectStatement {
    let count_all = || Func::count(Expr::col(sea_query::Asterisk));
    let total = Query::select()
        .expr(count_all())
        .from(exposure_event::Entity)
        .to_owned();
    let found = Query::select()
        .expr(count_all())
        .from(exposure_event::Entity)
        .and_where(Expr::col(Alias::new("rowid")).gte(first_rowid))
        .and_where(id_in(CheckIds::Table))
        .to_owned();
    Query::select()
        .expr_as(total, Alias::new("total"))
        .expr_as(found, Alias::new("found"))
        .to_owned()
}

/// `CREATE TEMPORARY TABLE IF NOT EXISTS stage_current`, with the columns
/// of `exposures_current`.
pub(crate) fn create_stage_current() -> TableCreateStatement {
    current_like(StageCurrent::Table)
}

/// A temporary table with the columns of `exposures_current`, in the
/// entity's order (`Column::iter()`), which is also the order of
/// `columns::current` (the Appender fills columns by position).
pub(crate) fn current_like(table: impl IntoIden) -> TableCreateStatement {
    let mut t = Table::create();
    t.table(table).temporary().if_not_exists();
    for c in Cur::iter() {
        t.col(match c {
            Cur::FirstSeen | Cur::LastSeen => timestamptz(c),
            Cur::RiskScore => ColumnDef::new(c).double().to_owned(),
            Cur::DstPort => ColumnDef::new(c).integer().to_owned(),
            _ if DETAIL_COLUMNS
                .iter()
                .any(|(_, at, _)| at.as_str() == c.as_str()) =>
            {
                timestamptz(c)
            }
            _ => text(c),
        });
    }
    t.to_owned()
}

/// `INSERT INTO table (columns) VALUES (...), (...)`: one multi-row insert
/// of `rows` into the columns of their entity (the PostgreSQL bulk path;
/// every value is bound, through the entity's casts: `save_as`, the
/// payload's text to `json`). Each value is asked for by the column it goes
/// to, from the one list that is also the insert's column list.
///
/// # Errors
/// Only if a row's length disagrees with the columns (impossible: both are
/// that list).
pub(crate) fn insert_rows<R: Row>(
    table: impl IntoIden,
    rows: Vec<R>,
) -> Result<InsertStatement, sea_query::error::Error> {
    let columns: Vec<R::Column> = R::Column::iter().collect();
    let mut insert = Query::insert();
    insert.into_table(table).columns(columns.iter().copied());
    for row in rows {
        insert.values(
            columns
                .iter()
                .map(|&column| column.save_as(Expr::val(row.value(column)))),
        )?;
    }
    Ok(insert)
}

/// The events of `rows` that are not stored yet, inserted: `INSERT INTO
/// exposure_events ... VALUES ... ON CONFLICT (event_id) DO NOTHING
/// RETURNING event_id`. On PostgreSQL this is how new events are told from
/// stored ones: an id another transaction is inserting at the same moment
/// waits for that transaction and is then skipped (if it committed) or
/// inserted (if it rolled back), so concurrent workers never store an
/// event twice nor lose one.
///
/// # Errors
/// As [`insert_rows`].
pub(crate) fn insert_new_events(
    rows: Vec<&ExposureEvent>,
) -> Result<InsertStatement, sea_query::error::Error> {
    let mut insert = insert_rows(exposure_event::Entity, rows)?;
    insert
        .on_conflict(OnConflict::column(Ev::EventId).do_nothing().to_owned())
        .returning_col(Ev::EventId);
    Ok(insert)
}

/// `DROP TABLE IF EXISTS table`: a staging table at the end of its unit of
/// work. Temporary tables live as long as their connection, and pooled
/// connections live long: on DuckDB each column of a table holds at least
/// one 256 KiB segment, so a kept staging table would hold megabytes per
/// idle connection.
pub(crate) fn drop_temporary(table: impl IntoIden) -> sea_query::TableDropStatement {
    Table::drop().table(table).if_exists().to_owned()
}

/// Empties a staging table for the next chunk.
pub(crate) fn clear(table: impl IntoIden) -> sea_query::DeleteStatement {
    Query::delete().from_table(table).to_owned()
}

/// `event_id IN (SELECT event_id FROM table)`.
fn id_in(table: impl IntoIden) -> Expr {
    Expr::col(Ev::EventId).in_subquery(Query::select().column(Ev::EventId).from(table).to_owned())
}

/// `SELECT COUNT(*) AS n FROM stage_current`.
pub(crate) fn count_staged_keys() -> SelectStatement {
    Query::select()
        .expr_as(Func::count(Expr::col(sea_query::Asterisk)), Alias::new("n"))
        .from(StageCurrent::Table)
        .to_owned()
}

/// `SELECT COUNT(*) AS n FROM stage_current JOIN exposures_current USING
/// the key`: how many of the staged keys are stored already (DuckDB, before
/// the upsert; PostgreSQL's upsert says it itself, see [`upsert_current`]).
pub(crate) fn count_stored_keys() -> SelectStatement {
    let (cur, stage) = (exposure_current::Entity, StageCurrent::Table);
    Query::select()
        .expr_as(Func::count(Expr::col(sea_query::Asterisk)), Alias::new("n"))
        .from(stage)
        .inner_join(cur, same_key(stage, cur))
        .to_owned()
}

/// `(a_at, a_id) > (b_at, b_id)`, spelled out (row comparison is not
/// portable): `a_at > b_at OR (a_at = b_at AND a_id > b_id)`. NULL (not
/// true) when a side is NULL.
fn after(a: (Expr, Expr), b: (Expr, Expr)) -> Expr {
    a.0.clone().gt(b.0.clone()).or(a.0.eq(b.0).and(a.1.gt(b.1)))
}

/// The merge of a stored row with a staged one, column by column (every
/// column but the key): `stored(c)` and `staged(c)` name a column of each.
/// The rule is described at [`upsert_current`].
fn merged_columns(stored: impl Fn(Cur) -> Expr, staged: impl Fn(Cur) -> Expr) -> Vec<(Cur, Expr)> {
    let mut merged = vec![
        (
            Cur::FirstSeen,
            Func::least([stored(Cur::FirstSeen), staged(Cur::FirstSeen)]).into(),
        ),
        (
            Cur::LastSeen,
            Func::greatest([stored(Cur::LastSeen), staged(Cur::LastSeen)]).into(),
        ),
    ];
    let newer = after(
        (staged(Cur::LastSeen), staged(Cur::LastEventId)),
        (stored(Cur::LastSeen), stored(Cur::LastEventId)),
    );
    for c in LATEST_COLUMNS {
        merged.push((
            c,
            Expr::case(newer.clone(), staged(c))
                .finally(stored(c))
                .into(),
        ));
    }
    for (value, at, id) in DETAIL_COLUMNS {
        let newer =
            after((staged(at), staged(id)), (stored(at), stored(id))).or(stored(at).is_null());
        for c in [value, at, id] {
            merged.push((
                c,
                Expr::case(newer.clone(), staged(c))
                    .finally(stored(c))
                    .into(),
            ));
        }
    }
    merged
}

/// The current-state upsert: `INSERT INTO exposures_current SELECT ... FROM
/// stage_current ORDER BY office_id, exposure_id ON CONFLICT (office_id,
/// exposure_id) DO UPDATE SET ...`, one row per key (`fold.rs`).
///
/// The merge of a stored row `S` with a staged row `N` (each the fold of a
/// set of events) is the fold of the union: `first_seen = LEAST`,
/// `last_seen = GREATEST`; the latest columns and `last_event_id` from `N`
/// when `(N.last_seen, N.last_event_id) > (S.last_seen, S.last_event_id)`;
/// each detail, with its `_seen_at` and `_event_id`, from `N` when its
/// provenance is greater than `S`'s or `S` has none. That merge is
/// commutative, associative and idempotent, so concurrent writers need no
/// locks: PostgreSQL serialises the updates of a row, and whichever commits
/// last merges into the other's result. Keys are inserted in ascending
/// order, so two writers of overlapping keys lock rows in the same order.
///
/// On PostgreSQL, `RETURNING "xmax" = 0 AS "inserted"` says per row whether
/// it was inserted (no previous version) or updated.
///
/// # Errors
/// Only if the column lists disagree (a programming error every ingest test
/// would catch).
pub(crate) fn upsert_current(postgres: bool) -> Result<InsertStatement, sea_query::error::Error> {
    let target = exposure_current::Entity;
    let mut on_conflict = OnConflict::columns([Cur::OfficeId, Cur::ExposureId]);
    for (c, merged) in merged_columns(
        |c| Expr::col((target, c)),
        |c| Expr::col((Alias::new("excluded"), c)),
    ) {
        on_conflict.value(c, merged);
    }
    let mut select = Query::select();
    select
        .columns(Cur::iter().map(|c| (StageCurrent::Table, c)))
        .from(StageCurrent::Table);
    if postgres {
        select
            .order_by((StageCurrent::Table, Cur::OfficeId), Order::Asc)
            .order_by((StageCurrent::Table, Cur::ExposureId), Order::Asc);
    }
    let mut insert = Query::insert();
    insert
        .into_table(target)
        .columns(Cur::iter())
        .select_from(select.to_owned())?
        .on_conflict(on_conflict.to_owned());
    if postgres {
        // No value here: `xmax` is the system column holding the id of a
        // transaction that updated the row, 0 for a row just inserted.
        insert.returning(Query::returning().expr(Expr::cust(r#""xmax" = 0 AS "inserted""#)));
    }
    Ok(insert)
}

/// `stage_stored`: the columns of `exposures_current` and `rid`.
pub(crate) fn create_stage_stored() -> TableCreateStatement {
    let mut t = current_like(StageStored::Table);
    t.col(ColumnDef::new(StageStored::Rid).big_integer());
    t
}

/// `a.office_id = b.office_id AND a.exposure_id = b.exposure_id`.
fn same_key(a: impl IntoIden, b: impl IntoIden) -> Expr {
    let (a, b) = (a.into_iden(), b.into_iden());
    Expr::col((a.clone(), Cur::OfficeId))
        .equals((b.clone(), Cur::OfficeId))
        .and(Expr::col((a, Cur::ExposureId)).equals((b, Cur::ExposureId)))
}

/// `INSERT INTO stage_stored (rid, <columns>) SELECT rowid, <columns> FROM
/// exposures_current WHERE rowid IN (SELECT e.rowid FROM exposures_current
/// AS e JOIN stage_current ON <same key>)`: the stored rows of the staged
/// keys. The join reads only the key columns of the stored rows; the other
/// columns are then read for the matched rows alone.
///
/// # Errors
/// Only if the column lists disagree (a programming error).
pub(crate) fn copy_stored_of_staged() -> Result<InsertStatement, sea_query::error::Error> {
    let e = Alias::new("e");
    let matched = Query::select()
        .expr(Expr::col((e.clone(), Alias::new("rowid"))))
        .from_as(exposure_current::Entity, e.clone())
        .inner_join(StageCurrent::Table, same_key(e, StageCurrent::Table))
        .to_owned();
    let select = Query::select()
        .expr(Expr::col(Alias::new("rowid")))
        .columns(Cur::iter())
        .from(exposure_current::Entity)
        .and_where(Expr::col(Alias::new("rowid")).in_subquery(matched))
        .to_owned();
    let columns =
        std::iter::once(StageStored::Rid.into_iden()).chain(Cur::iter().map(IntoIden::into_iden));
    Ok(Query::insert()
        .into_table(StageStored::Table)
        .columns(columns)
        .select_from(select)?
        .to_owned())
}

/// The merge of each copied stored row with its staged row, column by
/// column (see [`merged_columns`]).
fn merged_with_stage() -> Vec<(Cur, Expr)> {
    merged_columns(
        |c| Expr::col((StageStored::Table, c)),
        |c| Expr::col((StageCurrent::Table, c)),
    )
}

/// `merged IS DISTINCT FROM stage_stored.c`: whether the merge changes
/// column `c` of a stored row.
fn changes(c: Cur, merged: Expr) -> Expr {
    merged.binary(
        sea_query::BinOper::Custom("IS DISTINCT FROM"),
        Expr::col((StageStored::Table, c)),
    )
}

/// `SELECT BOOL_OR(<merged c> IS DISTINCT FROM stage_stored.c) AS c, ...
/// FROM stage_stored JOIN stage_current ON <same key>`: per column (returned
/// in order, each named as its column), whether the merge changes it in any
/// stored row (NULL when none is stored).
pub(crate) fn changed_columns() -> (SelectStatement, Vec<Cur>) {
    let mut select = Query::select();
    let mut columns = Vec::new();
    for (c, merged) in merged_with_stage() {
        select.expr_as(Func::cust(Alias::new("BOOL_OR")).arg(changes(c, merged)), c);
        columns.push(c);
    }
    select.from(StageStored::Table).inner_join(
        StageCurrent::Table,
        same_key(StageStored::Table, StageCurrent::Table),
    );
    (select.to_owned(), columns)
}

/// `UPDATE exposures_current SET c = m.c, ... FROM (SELECT stage_stored.rid,
/// <merged c> AS c, ..., (<merged c> IS DISTINCT FROM stage_stored.c OR
/// ...) AS changed FROM stage_stored JOIN stage_current ON <same key>) AS m
/// WHERE exposures_current.rowid = m.rid AND m.changed`: writes the merge
/// of `columns` (those [`changed_columns`] found changed), in the rows it
/// changes.
pub(crate) fn update_changed(columns: &[Cur]) -> sea_query::UpdateStatement {
    let m = Alias::new("m");
    let changed = Alias::new("changed");
    let mut merged = Query::select();
    merged.column((StageStored::Table, StageStored::Rid));
    let mut any_change: Option<Expr> = None;
    for (c, value) in merged_with_stage() {
        if columns.iter().any(|k| k.as_str() == c.as_str()) {
            let change = changes(c, value.clone());
            any_change = Some(match any_change {
                Some(any) => any.or(change),
                None => change,
            });
            merged.expr_as(value, c);
        }
    }
    merged
        .expr_as(
            any_change.unwrap_or_else(|| Expr::val(false)),
            changed.clone(),
        )
        .from(StageStored::Table)
        .inner_join(
            StageCurrent::Table,
            same_key(StageStored::Table, StageCurrent::Table),
        );
    Query::update()
        .table(exposure_current::Entity)
        .values(columns.iter().map(|&c| (c, Expr::col((m.clone(), c)))))
        .from(sea_query::TableRef::SubQuery(
            Box::new(merged.to_owned()),
            m.clone().into_iden(),
        ))
        .and_where(
            Expr::col((exposure_current::Entity, Alias::new("rowid")))
                .equals((m.clone(), StageStored::Rid)),
        )
        .and_where(Expr::col((m, changed)))
        .to_owned()
}

/// `INSERT INTO exposures_current (<columns>) SELECT <columns> FROM
/// stage_current WHERE NOT EXISTS (SELECT 1 FROM stage_stored WHERE <same
/// key>)`: the staged keys not stored yet.
///
/// # Errors
/// Only if the column lists disagree (a programming error).
pub(crate) fn insert_unstored() -> Result<InsertStatement, sea_query::error::Error> {
    let stored = Query::select()
        .expr(Expr::val(1))
        .from(StageStored::Table)
        .and_where(same_key(StageStored::Table, StageCurrent::Table))
        .to_owned();
    let select = Query::select()
        .columns(Cur::iter().map(|c| (StageCurrent::Table, c)))
        .from(StageCurrent::Table)
        .and_where(Expr::exists(stored).not())
        .to_owned();
    Ok(Query::insert()
        .into_table(exposure_current::Entity)
        .columns(Cur::iter())
        .select_from(select)?
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_query::{PostgresQueryBuilder, Value};

    #[test]
    fn the_upsert_merges_by_provenance_and_binds_nothing() -> Result<(), sea_query::error::Error> {
        let (sql, values) = upsert_current(false)?.build(PostgresQueryBuilder);
        assert!(
            sql.contains(r#"ON CONFLICT ("office_id", "exposure_id") DO UPDATE SET"#),
            "{sql}"
        );
        // A detail moves with its provenance, when that is greater.
        assert!(
            sql.contains(r#""hostname" = (CASE WHEN ("excluded"."hostname_seen_at" > "exposures_current"."hostname_seen_at" OR ("excluded"."hostname_seen_at" = "exposures_current"."hostname_seen_at" AND "excluded"."hostname_event_id" > "exposures_current"."hostname_event_id") OR "exposures_current"."hostname_seen_at" IS NULL) THEN "excluded"."hostname" ELSE "exposures_current"."hostname" END)"#),
            "{sql}"
        );
        assert!(sql.contains("GREATEST") && sql.contains("LEAST"), "{sql}");
        assert!(!sql.contains("RETURNING"), "{sql}");
        assert!(values.0.is_empty());
        let (sql, values) = upsert_current(true)?.build(PostgresQueryBuilder);
        assert!(
            sql.ends_with(r#"RETURNING "xmax" = 0 AS "inserted""#),
            "{sql}"
        );
        assert!(values.0.is_empty());
        Ok(())
    }

    #[test]
    fn stored_keys_are_counted_by_the_whole_key() {
        let (sql, values) = count_stored_keys().build(PostgresQueryBuilder);
        assert_eq!(
            sql,
            r#"SELECT COUNT(*) AS "n" FROM "stage_current" INNER JOIN "exposures_current" ON "stage_current"."office_id" = "exposures_current"."office_id" AND "stage_current"."exposure_id" = "exposures_current"."exposure_id""#
        );
        assert!(values.0.is_empty());
    }

    #[test]
    fn the_appended_tail_is_counted_with_a_bound_row_id() {
        let (sql, values) = count_appended(42).build(PostgresQueryBuilder);
        assert_eq!(
            sql,
            r#"SELECT (SELECT COUNT(*) FROM "exposure_events") AS "total", (SELECT COUNT(*) FROM "exposure_events" WHERE "rowid" >= $1 AND "event_id" IN (SELECT "event_id" FROM "check_ids")) AS "found""#
        );
        assert_eq!(values.0, vec![Value::BigInt(Some(42))]);
    }
}
