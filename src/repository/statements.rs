//! Every SQL statement of the repository, built with sea-query. Values are
//! always bound, never formatted into SQL.
//!
//! Staging tables are temporary (private to the unit of work's connection),
//! filled in bulk (see `stage.rs`: DuckDB's Appender, or multi-row inserts
//! built here on PostgreSQL), and feed set-based statements. They stay small on purpose: DuckDB keeps
//! every row written to a temporary table in memory until the transaction
//! ends, even after it is deleted, and a file is one transaction. So only
//! event ids and keys are staged per chunk; the events themselves are
//! appended straight to `exposure_events`, and the folded current state
//! (one row per key) is staged once per call.

use sea_query::{
    Alias, ColumnDef, DynIden, Expr, ExprTrait, Func, Iden, InsertStatement, IntoIden, OnConflict,
    Order, Query, SelectStatement, Table, TableCreateStatement, Value,
};

use crate::entity::exposure_current::{self, Column as Cur};
use crate::entity::exposure_event::{self, Column as Ev};

/// The event ids of the chunk.
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

/// The keys of the chunk's new events that the call has not looked up yet.
#[derive(Iden, Clone, Copy)]
pub(crate) enum StageKeys {
    Table,
}

/// Folded rows, one per key and pass.
#[derive(Iden, Clone, Copy)]
pub(crate) enum StageCurrent {
    Table,
    /// 1 = replace pass, 2 = fill pass (see `fold.rs`).
    Pass,
}

/// Columns of `exposure_events`, in the Appender's order.
pub(crate) const EVENT_COLUMNS: [Ev; 20] = [
    Ev::EventId,
    Ev::Timestamp,
    Ev::OfficeId,
    Ev::AssetId,
    Ev::ExposureId,
    Ev::ExposureClass,
    Ev::EventAction,
    Ev::Status,
    Ev::Severity,
    Ev::RiskScore,
    Ev::Hostname,
    Ev::AssetIp,
    Ev::DstIp,
    Ev::DstPort,
    Ev::Protocol,
    Ev::ServiceName,
    Ev::ServiceProduct,
    Ev::ServiceVersion,
    Ev::ScanRunId,
    Ev::RawPayloadJson,
];

/// Columns of `exposures_current`, in staging and insert order.
pub(crate) const CURRENT_COLUMNS: [Cur; 18] = [
    Cur::OfficeId,
    Cur::ExposureId,
    Cur::ExposureClass,
    Cur::Status,
    Cur::Severity,
    Cur::EventAction,
    Cur::RiskScore,
    Cur::FirstSeen,
    Cur::LastSeen,
    Cur::AssetId,
    Cur::Hostname,
    Cur::AssetIp,
    Cur::DstIp,
    Cur::DstPort,
    Cur::Protocol,
    Cur::ServiceName,
    Cur::ServiceProduct,
    Cur::ServiceVersion,
];

/// The COALESCE-preserved details (see `fold.rs`).
const DETAIL_COLUMNS: [Cur; 8] = [
    Cur::Hostname,
    Cur::AssetIp,
    Cur::DstIp,
    Cur::DstPort,
    Cur::Protocol,
    Cur::ServiceName,
    Cur::ServiceProduct,
    Cur::ServiceVersion,
];

/// Taken from the newest event (by timestamp, ties by input order).
const LATEST_COLUMNS: [Cur; 6] = [
    Cur::ExposureClass,
    Cur::AssetId,
    Cur::Status,
    Cur::Severity,
    Cur::EventAction,
    Cur::RiskScore,
];

/// The replace pass of the current-state upsert.
pub(crate) const PASS_REPLACE: i32 = 1;
/// The fill pass of the current-state upsert.
pub(crate) const PASS_FILL: i32 = 2;

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
/// of those past the first `events_before` are the checked ids (DuckDB's
/// `rowid`; see `check.rs`).
pub(crate) fn count_appended(events_before: u64) -> SelectStatement {
    let count_all = || Func::count(Expr::col(sea_query::Asterisk));
    let total = Query::select()
        .expr(count_all())
        .from(exposure_event::Entity)
        .to_owned();
    let found = Query::select()
        .expr(count_all())
        .from(exposure_event::Entity)
        .and_where(
            Expr::col(Alias::new("rowid")).gte(i64::try_from(events_before).unwrap_or(i64::MAX)),
        )
        .and_where(id_in(CheckIds::Table))
        .to_owned();
    Query::select()
        .expr_as(total, Alias::new("total"))
        .expr_as(found, Alias::new("found"))
        .to_owned()
}

/// `CREATE TEMPORARY TABLE IF NOT EXISTS stage_keys (office_id, exposure_id)`.
pub(crate) fn create_stage_keys() -> TableCreateStatement {
    Table::create()
        .table(StageKeys::Table)
        .temporary()
        .if_not_exists()
        .col(text(Cur::OfficeId))
        .col(text(Cur::ExposureId))
        .to_owned()
}

/// `CREATE TEMPORARY TABLE IF NOT EXISTS stage_current`: the pass, then the
/// `exposures_current` columns.
pub(crate) fn create_stage_current() -> TableCreateStatement {
    current_like(
        StageCurrent::Table,
        Some(ColumnDef::new(StageCurrent::Pass).integer().to_owned()),
    )
}

/// A temporary table with the columns of `exposures_current`, behind
/// `leading` if given (the Appender fills columns by position).
fn current_like(table: impl IntoIden, leading: Option<ColumnDef>) -> TableCreateStatement {
    let mut t = Table::create();
    t.table(table).temporary().if_not_exists();
    if let Some(column) = leading {
        t.col(column);
    }
    for c in CURRENT_COLUMNS {
        t.col(match c {
            Cur::FirstSeen | Cur::LastSeen => timestamptz(c),
            Cur::RiskScore => ColumnDef::new(c).double().to_owned(),
            Cur::DstPort => ColumnDef::new(c).integer().to_owned(),
            _ => text(c),
        });
    }
    t.to_owned()
}

/// `INSERT INTO table (columns) VALUES (...), (...)`: one multi-row insert
/// (the PostgreSQL bulk path; every value is bound).
///
/// # Errors
/// Only if a row's length disagrees with the columns (impossible with
/// arrays of the same `N`).
pub(crate) fn insert_rows<const N: usize>(
    table: impl IntoIden,
    columns: [DynIden; N],
    rows: Vec<[Value; N]>,
) -> Result<InsertStatement, sea_query::error::Error> {
    let mut insert = Query::insert();
    insert.into_table(table).columns(columns);
    for row in rows {
        insert.values(row.map(Expr::val))?;
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
    rows: Vec<[Value; 20]>,
) -> Result<InsertStatement, sea_query::error::Error> {
    let mut insert = insert_rows(
        exposure_event::Entity,
        EVENT_COLUMNS.map(IntoIden::into_iden),
        rows,
    )?;
    insert
        .on_conflict(OnConflict::column(Ev::EventId).do_nothing().to_owned())
        .returning_col(Ev::EventId);
    Ok(insert)
}

/// The columns of `stage_ids`, `stage_keys` and `stage_current`, in the
/// order their rows are built (`stage.rs`).
pub(crate) fn stage_ids_columns() -> [DynIden; 1] {
    [Ev::EventId.into_iden()]
}

/// See [`stage_ids_columns`].
pub(crate) fn stage_keys_columns() -> [DynIden; 2] {
    [Cur::OfficeId.into_iden(), Cur::ExposureId.into_iden()]
}

/// See [`stage_ids_columns`].
pub(crate) fn stage_current_columns() -> [DynIden; 19] {
    std::array::from_fn(|i| match i.checked_sub(1) {
        None => StageCurrent::Pass.into_iden(),
        Some(c) => CURRENT_COLUMNS[c].into_iden(),
    })
}

/// Key locks are striped: a key is locked through one of this many
/// advisory locks. Locking every key of a large file one by one would need
/// one entry per key in PostgreSQL's shared lock table (about 6,400 entries
/// with the default settings, shared by all sessions); a bounded number of
/// stripes always fits, at the price of writers of different keys in the
/// same stripe waiting for each other.
pub(crate) const LOCK_STRIPES: i32 = 1_024;

/// The first key of the two-key advisory locks this repository takes, so
/// they cannot collide with other applications' advisory locks ("EXPS").
pub(crate) const LOCK_NAMESPACE: i32 = 0x4558_5053;

/// PostgreSQL only: takes the transaction-scoped advisory lock of every
/// key in `stage_keys` (see [`LOCK_STRIPES`]), in ascending order, before
/// their stored `last_seen` is read. The fold decides from that value which
/// events are late, so concurrent writers of the same key must take turns
/// from the read to their commit. An ingest locks all of its keys with one
/// such statement, so in ascending order: two ingests never wait for each
/// other in crossing orders. (A deadlock remains possible between two
/// ingests that insert the same event ids in different orders; PostgreSQL
/// detects it and the ingest retries.)
///
/// `SELECT COUNT(pg_advisory_xact_lock($1, s.stripe)) FROM (SELECT DISTINCT
/// hashtext(office_id || exposure_id) & $2 AS stripe FROM stage_keys ORDER
/// BY stripe) AS s`.
pub(crate) fn lock_staged_keys() -> SelectStatement {
    use sea_query::extension::postgres::PgExpr;
    let (stripe, s) = (Alias::new("stripe"), Alias::new("s"));
    let key = Expr::col(Cur::OfficeId).concat(Expr::col(Cur::ExposureId));
    let stripes = Query::select()
        .distinct()
        .expr_as(
            Func::cust("hashtext").arg(key).bit_and(LOCK_STRIPES - 1),
            stripe.clone(),
        )
        .from(StageKeys::Table)
        .order_by(stripe.clone(), Order::Asc)
        .to_owned();
    Query::select()
        .expr_as(
            Func::count(
                Func::cust("pg_advisory_xact_lock")
                    .args([Expr::val(LOCK_NAMESPACE), Expr::col((s.clone(), stripe))]),
            ),
            Alias::new("locked"),
        )
        .from_subquery(stripes, s)
        .to_owned()
}

/// Empties a staging table for the next chunk.
pub(crate) fn clear(table: impl IntoIden) -> sea_query::DeleteStatement {
    Query::delete().from_table(table).to_owned()
}

/// `event_id IN (SELECT event_id FROM table)`.
fn id_in(table: impl IntoIden) -> Expr {
    Expr::col(Ev::EventId).in_subquery(Query::select().column(Ev::EventId).from(table).to_owned())
}

/// `SELECT event_id FROM exposure_events WHERE event_id IN (SELECT event_id
/// FROM stage_ids)`: which of the chunk's ids are stored already (including
/// those appended earlier in the same transaction).
pub(crate) fn stored_event_ids() -> SelectStatement {
    Query::select()
        .column(Ev::EventId)
        .from(exposure_event::Entity)
        .and_where(id_in(StageIds::Table))
        .to_owned()
}

/// `SELECT office_id, exposure_id, last_seen FROM exposures_current JOIN
/// stage_keys USING the key`: the stored `last_seen` of the chunk's keys.
pub(crate) fn stored_last_seen() -> SelectStatement {
    let cur = exposure_current::Entity;
    Query::select()
        .columns([
            (cur, Cur::OfficeId),
            (cur, Cur::ExposureId),
            (cur, Cur::LastSeen),
        ])
        .from(cur)
        .inner_join(
            StageKeys::Table,
            Expr::col((StageKeys::Table, Cur::OfficeId))
                .equals((cur, Cur::OfficeId))
                .and(Expr::col((StageKeys::Table, Cur::ExposureId)).equals((cur, Cur::ExposureId))),
        )
        .to_owned()
}

/// The fill pass: `UPDATE target SET f = COALESCE(target.f, s.f), ... FROM
/// stage_current s WHERE s.pass = 2 AND s.key = target.key`. Fill rows
/// exist only for stored keys, so this is an update, never an insert (it
/// is also an order of magnitude faster on DuckDB than the same merge as a
/// second ON CONFLICT pass, measured 3.8 s vs 0.1 s for 100k keys).
pub(crate) fn fill_details(target: impl IntoIden + Copy) -> sea_query::UpdateStatement {
    let stage = StageCurrent::Table;
    let mut update = Query::update();
    update.table(target);
    for c in DETAIL_COLUMNS {
        update.value(
            c,
            Func::coalesce([Expr::col((target, c)), Expr::col((stage, c))]),
        );
    }
    update
        .from(stage)
        .and_where(Expr::col((stage, StageCurrent::Pass)).eq(PASS_FILL))
        .and_where(Expr::col((stage, Cur::OfficeId)).equals((target, Cur::OfficeId)))
        .and_where(Expr::col((stage, Cur::ExposureId)).equals((target, Cur::ExposureId)))
        .to_owned()
}

/// The current-state upsert of one pass into `target`
/// (`exposures_current`): `INSERT INTO target SELECT ... FROM
/// stage_current WHERE pass = $1 ON CONFLICT (office_id, exposure_id) DO
/// UPDATE SET ...`.
///
/// `first_seen = LEAST`, `last_seen = GREATEST`; the latest columns from
/// the staged row when it is at least as new as the stored row (`CASE WHEN
/// excluded.last_seen >= stored.last_seen`); details `COALESCE(excluded.f,
/// stored.f)`. (The fill pass is [`fill_details`].)
///
/// # Errors
/// Only if the column lists disagree (a programming error every ingest test
/// would catch).
pub(crate) fn upsert_current(
    target: impl IntoIden + Copy,
) -> Result<InsertStatement, sea_query::error::Error> {
    let stored = |c: Cur| Expr::col((target, c));
    let excluded = |c: Cur| Expr::col((Alias::new("excluded"), c));
    let mut on_conflict = OnConflict::columns([Cur::OfficeId, Cur::ExposureId]);
    on_conflict.value(
        Cur::FirstSeen,
        Func::least([stored(Cur::FirstSeen), excluded(Cur::FirstSeen)]),
    );
    on_conflict.value(
        Cur::LastSeen,
        Func::greatest([stored(Cur::LastSeen), excluded(Cur::LastSeen)]),
    );
    let newer = || excluded(Cur::LastSeen).gte(stored(Cur::LastSeen));
    for c in LATEST_COLUMNS {
        on_conflict.value(c, Expr::case(newer(), excluded(c)).finally(stored(c)));
    }
    for c in DETAIL_COLUMNS {
        on_conflict.value(c, Func::coalesce([excluded(c), stored(c)]));
    }
    let select = Query::select()
        .columns(CURRENT_COLUMNS.map(|c| (StageCurrent::Table, c)))
        .from(StageCurrent::Table)
        .and_where(Expr::col((StageCurrent::Table, StageCurrent::Pass)).eq(PASS_REPLACE))
        .to_owned();
    Ok(Query::insert()
        .into_table(target)
        .columns(CURRENT_COLUMNS)
        .select_from(select)?
        .on_conflict(on_conflict.to_owned())
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_query::PostgresQueryBuilder;

    #[test]
    fn upserts_bind_values_and_use_coalesce() -> Result<(), sea_query::error::Error> {
        let (sql, values) = upsert_current(exposure_current::Entity)?.build(PostgresQueryBuilder);
        assert!(
            sql.contains(r#"ON CONFLICT ("office_id", "exposure_id") DO UPDATE SET"#),
            "{sql}"
        );
        assert!(
            sql.contains(r#"COALESCE("excluded"."hostname", "exposures_current"."hostname")"#),
            "{sql}"
        );
        assert!(sql.contains("GREATEST") && sql.contains("LEAST"), "{sql}");
        assert!(sql.contains(r#""stage_current"."pass" = $1"#), "{sql}");
        assert_eq!(values.0.len(), 1);
        let (fill, values) = fill_details(exposure_current::Entity).build(PostgresQueryBuilder);
        assert!(
            fill.contains(r#""hostname" = COALESCE("exposures_current"."hostname", "stage_current"."hostname")"#),
            "{fill}"
        );
        assert!(fill.contains(r#"FROM "stage_current""#), "{fill}");
        assert_eq!(values.0.len(), 1);
        Ok(())
    }

    #[test]
    fn keys_are_locked_by_stripe_in_ascending_order() {
        let (sql, values) = lock_staged_keys().build(PostgresQueryBuilder);
        assert_eq!(
            sql,
            r#"SELECT COUNT(pg_advisory_xact_lock($1, "s"."stripe")) AS "locked" FROM (SELECT DISTINCT hashtext("office_id" || "exposure_id") & $2 AS "stripe" FROM "stage_keys" ORDER BY "stripe" ASC) AS "s""#
        );
        assert_eq!(values.0.len(), 2);
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

    #[test]
    fn stored_ids_are_found_with_a_bound_free_semi_join() {
        let (sql, values) = stored_event_ids().build(PostgresQueryBuilder);
        assert_eq!(
            sql,
            r#"SELECT "event_id" FROM "exposure_events" WHERE "event_id" IN (SELECT "event_id" FROM "stage_ids")"#
        );
        assert!(values.0.is_empty());
    }
}
