//! Bulk staging, inside the unit of work's transaction.
//!
//! Rows are built once, as typed sea-query values (so a NULL keeps its
//! column's type), for both engines; only the bulk path differs:
//!
//! - DuckDB: the Appender, which takes owned DuckDB values (timestamps as
//!   native microsecond values, JSON as text);
//! - PostgreSQL: multi-row `INSERT ... VALUES` statements built with
//!   sea-query, each under PostgreSQL's limit of 65,535 bound values.

use duckdb::types::Value as DuckValue;
use sea_orm::IdenStatic;
use sea_query::Value;

use super::fold::{Details, Folded};
use super::statements::{EVENT_COLUMNS, PASS_FILL, PASS_REPLACE};
use crate::event::ExposureEvent;

/// The audit log's table name.
const EVENTS_TABLE: &str = "exposure_events";

/// Temporary tables live in DuckDB's `temp` catalog.
const TEMP_CATALOG: &str = "temp";
const TEMP_SCHEMA: &str = "main";

/// PostgreSQL binds at most 65,535 values per statement; batches stay well
/// below that (and equal-sized batches reuse one prepared statement).
const POSTGRES_MAX_VALUES: usize = 20_000;

fn text(s: &str) -> Value {
    Value::String(Some(s.to_owned()))
}

fn opt_text(s: Option<&String>) -> Value {
    Value::String(s.cloned())
}

fn micros(t: i64) -> Value {
    Value::ChronoDateTimeUtc(chrono::DateTime::from_timestamp_micros(t))
}

/// An event as a row, in the column order of `exposure_events`.
#[must_use]
pub fn event_row(e: &ExposureEvent) -> [Value; 20] {
    [
        text(&e.event_id),
        Value::ChronoDateTimeUtc(Some(e.timestamp)),
        text(&e.office_id),
        text(&e.asset_id),
        text(&e.exposure_id),
        text(&e.exposure_class),
        text(e.event_action.as_str()),
        text(e.status.as_str()),
        text(e.severity.as_str()),
        Value::Double(Some(e.risk_score)),
        opt_text(e.hostname.as_ref()),
        opt_text(e.asset_ip.as_ref()),
        opt_text(e.dst_ip.as_ref()),
        Value::Int(e.dst_port),
        opt_text(e.protocol.as_ref()),
        opt_text(e.service_name.as_ref()),
        opt_text(e.service_product.as_ref()),
        opt_text(e.service_version.as_ref()),
        opt_text(e.scan_run_id.as_ref()),
        Value::Json(e.raw_payload_json.clone().map(Box::new)),
    ]
}

/// A row of `stage_ids`.
pub(crate) fn id_row(event_id: &str) -> [Value; 1] {
    [text(event_id)]
}

/// A row of `stage_keys`.
pub(crate) fn key_row(office_id: &str, exposure_id: &str) -> [Value; 2] {
    [text(office_id), text(exposure_id)]
}

/// The rows of `stage_current` for one folded key: the replace row, and the
/// fill row when there is one. `CURRENT_COLUMNS` order behind the pass.
pub(crate) fn current_rows(f: &Folded) -> impl Iterator<Item = [Value; 19]> + '_ {
    let row = move |pass: i32, d: &Details| -> [Value; 19] {
        [
            Value::Int(Some(pass)),
            text(&f.office_id),
            text(&f.exposure_id),
            text(&f.exposure_class),
            text(f.status.as_str()),
            text(f.severity.as_str()),
            text(f.event_action.as_str()),
            Value::Double(Some(f.risk_score)),
            micros(f.first_seen),
            micros(f.last_seen),
            text(&f.asset_id),
            opt_text(d.hostname.as_ref()),
            opt_text(d.asset_ip.as_ref()),
            opt_text(d.dst_ip.as_ref()),
            Value::Int(d.dst_port),
            opt_text(d.protocol.as_ref()),
            opt_text(d.service_name.as_ref()),
            opt_text(d.service_product.as_ref()),
            opt_text(d.service_version.as_ref()),
        ]
    };
    std::iter::once(row(PASS_REPLACE, &f.replace)).chain(f.fill.as_ref().map(|d| row(PASS_FILL, d)))
}

/// Splits `rows` into batches for multi-row statements on PostgreSQL.
pub(crate) fn postgres_batches<const N: usize>(
    rows: Vec<[Value; N]>,
) -> impl Iterator<Item = Vec<[Value; N]>> {
    let per_batch = (POSTGRES_MAX_VALUES / N).max(1);
    let mut rows = rows.into_iter().peekable();
    std::iter::from_fn(move || {
        rows.peek()?;
        Some(rows.by_ref().take(per_batch).collect())
    })
}

/// Appends `rows` to the temporary table `table` on `conn`.
///
/// # Errors
/// DuckDB's error (a value that does not fit its column).
pub(crate) fn append_temp<const N: usize>(
    conn: &duckdb::Connection,
    table: &str,
    rows: Vec<[Value; N]>,
) -> duckdb_adapter::Result<()> {
    let appender = conn.appender_to_catalog_and_db(table, TEMP_CATALOG, TEMP_SCHEMA)?;
    append_all(appender, rows)
}

/// Appends `ids` to the one-column temporary table `table` on `conn`.
///
/// # Errors
/// DuckDB's error.
pub(crate) fn append_ids<'a>(
    conn: &duckdb::Connection,
    table: &str,
    ids: impl Iterator<Item = &'a str>,
) -> duckdb_adapter::Result<()> {
    let mut appender = conn.appender_to_catalog_and_db(table, TEMP_CATALOG, TEMP_SCHEMA)?;
    for id in ids {
        appender.append_row([id])?;
    }
    Ok(appender.flush()?)
}

/// Appends event rows (from [`event_row`]) to `exposure_events`, naming the
/// columns so that a hand-made table with another column order still
/// receives every value in its column.
///
/// # Errors
/// DuckDB's error, for example a primary key violation when another
/// transaction stored the same event id in the meantime.
pub(crate) fn append_events(
    conn: &duckdb::Connection,
    rows: Vec<[Value; 20]>,
) -> duckdb_adapter::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let columns = EVENT_COLUMNS.map(|c| c.as_str());
    append_all(conn.appender_with_columns(EVENTS_TABLE, &columns)?, rows)
}

fn append_all<const N: usize>(
    mut appender: duckdb::Appender<'_>,
    rows: Vec<[Value; N]>,
) -> duckdb_adapter::Result<()> {
    for row in rows {
        let row = row
            .into_iter()
            .map(duckdb_adapter::into_duckdb)
            .collect::<duckdb_adapter::Result<Vec<DuckValue>>>()?;
        appender.append_row(duckdb::appender_params_from_iter(row))?;
    }
    Ok(appender.flush()?)
}
