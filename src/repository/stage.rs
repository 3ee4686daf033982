//! Bulk staging with DuckDB's Appender, inside the unit of work's
//! transaction. Rows are built as owned DuckDB values (timestamps as native
//! microsecond values, JSON as text) so the blocking append owns its data.

use duckdb::types::{TimeUnit, Value};

use sea_orm::IdenStatic;

use super::fold::{Details, Folded};
use super::statements::{EVENT_COLUMNS, PASS_FILL, PASS_REPLACE};
use crate::event::ExposureEvent;

/// The audit log's table name.
const EVENTS_TABLE: &str = "exposure_events";

/// Temporary tables live in DuckDB's `temp` catalog.
const TEMP_CATALOG: &str = "temp";
const TEMP_SCHEMA: &str = "main";

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn opt_text(s: Option<&String>) -> Value {
    s.map_or(Value::Null, |s| Value::Text(s.clone()))
}

fn micros(t: i64) -> Value {
    Value::Timestamp(TimeUnit::Microsecond, t)
}

/// An event as a DuckDB Appender row, in the column order of
/// `exposure_events` (timestamps as native microsecond values, JSON as text).
#[must_use]
pub fn event_row(e: &ExposureEvent) -> [Value; 20] {
    [
        text(&e.event_id),
        micros(e.timestamp_micros()),
        text(&e.office_id),
        text(&e.asset_id),
        text(&e.exposure_id),
        text(&e.exposure_class),
        text(e.event_action.as_str()),
        text(e.status.as_str()),
        text(e.severity.as_str()),
        Value::Double(e.risk_score),
        opt_text(e.hostname.as_ref()),
        opt_text(e.asset_ip.as_ref()),
        opt_text(e.dst_ip.as_ref()),
        e.dst_port.map_or(Value::Null, Value::Int),
        opt_text(e.protocol.as_ref()),
        opt_text(e.service_name.as_ref()),
        opt_text(e.service_product.as_ref()),
        opt_text(e.service_version.as_ref()),
        opt_text(e.scan_run_id.as_ref()),
        e.raw_payload_json
            .as_ref()
            .map_or(Value::Null, |j| Value::Text(j.to_string())),
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
            Value::Int(pass),
            text(&f.office_id),
            text(&f.exposure_id),
            text(&f.exposure_class),
            text(f.status.as_str()),
            text(f.severity.as_str()),
            text(f.event_action.as_str()),
            Value::Double(f.risk_score),
            micros(f.first_seen),
            micros(f.last_seen),
            text(&f.asset_id),
            opt_text(d.hostname.as_ref()),
            opt_text(d.asset_ip.as_ref()),
            opt_text(d.dst_ip.as_ref()),
            d.dst_port.map_or(Value::Null, Value::Int),
            opt_text(d.protocol.as_ref()),
            opt_text(d.service_name.as_ref()),
            opt_text(d.service_product.as_ref()),
            opt_text(d.service_version.as_ref()),
        ]
    };
    std::iter::once(row(PASS_REPLACE, &f.replace)).chain(f.fill.as_ref().map(|d| row(PASS_FILL, d)))
}

/// Appends `rows` to the temporary table `table` on `conn`.
///
/// # Errors
/// DuckDB's error (a value that does not fit its column).
pub(crate) fn append_temp<const N: usize>(
    conn: &duckdb::Connection,
    table: &str,
    rows: impl IntoIterator<Item = [Value; N]>,
) -> duckdb::Result<()> {
    let appender = conn.appender_to_catalog_and_db(table, TEMP_CATALOG, TEMP_SCHEMA)?;
    append_all(appender, rows)
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
) -> duckdb::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let columns = EVENT_COLUMNS.map(|c| c.as_str());
    append_all(conn.appender_with_columns(EVENTS_TABLE, &columns)?, rows)
}

fn append_all<const N: usize>(
    mut appender: duckdb::Appender<'_>,
    rows: impl IntoIterator<Item = [Value; N]>,
) -> duckdb::Result<()> {
    for row in rows {
        appender.append_row(duckdb::appender_params_from_iter(row))?;
    }
    appender.flush()
}
