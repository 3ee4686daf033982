//! Bulk staging, inside the unit of work's transaction.
//!
//! - DuckDB: the Appender, fed Arrow record batches built column by column
//!   from the events and folds themselves (`columns.rs`);
//! - PostgreSQL: rows of typed sea-query values (so a NULL keeps its
//!   column's type) in multi-row `INSERT ... VALUES` statements, each under
//!   PostgreSQL's limit of 65,535 bound values.

use sea_query::Value;

use super::fold::{Folded, Sourced};
use crate::event::ExposureEvent;

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

/// An event as a row, in the column order of `exposure_events`
/// (PostgreSQL's multi-row inserts). The payload is its JSON text (the
/// insert casts it to `json`, which keeps the text as it is).
pub(crate) fn event_row(e: &ExposureEvent) -> [Value; 20] {
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
        Value::String(e.raw_payload_json.as_ref().map(|p| p.as_str().to_owned())),
    ]
}

/// A detail and its provenance: `[value, seen_at, event_id]`.
fn sourced<T>(detail: Option<Sourced<T>>, value: impl Fn(T) -> Value, null: Value) -> [Value; 3] {
    match detail {
        None => [null, Value::ChronoDateTimeUtc(None), Value::String(None)],
        Some(d) => [value(d.value), micros(d.from.at), text(&d.from.event_id)],
    }
}

/// The row of `stage_current` for one folded key, in `CURRENT_COLUMNS`
/// order.
pub(crate) fn current_row(f: Folded) -> [Value; 35] {
    let d = f.details;
    let owned = |s: String| Value::String(Some(s));
    let no_text = || Value::String(None);
    let [hostname, hostname_at, hostname_id] = sourced(d.hostname, owned, no_text());
    let [asset_ip, asset_ip_at, asset_ip_id] = sourced(d.asset_ip, owned, no_text());
    let [dst_ip, dst_ip_at, dst_ip_id] = sourced(d.dst_ip, owned, no_text());
    let [dst_port, dst_port_at, dst_port_id] =
        sourced(d.dst_port, |p| Value::Int(Some(p)), Value::Int(None));
    let [protocol, protocol_at, protocol_id] = sourced(d.protocol, owned, no_text());
    let [name, name_at, name_id] = sourced(d.service_name, owned, no_text());
    let [product, product_at, product_id] = sourced(d.service_product, owned, no_text());
    let [version, version_at, version_id] = sourced(d.service_version, owned, no_text());
    [
        owned(f.office_id),
        owned(f.exposure_id),
        owned(f.exposure_class),
        text(f.status.as_str()),
        text(f.severity.as_str()),
        text(f.event_action.as_str()),
        Value::Double(Some(f.risk_score)),
        micros(f.first_seen),
        micros(f.last.at),
        owned(f.asset_id),
        hostname,
        asset_ip,
        dst_ip,
        dst_port,
        protocol,
        name,
        product,
        version,
        text(&f.last.event_id),
        hostname_at,
        hostname_id,
        asset_ip_at,
        asset_ip_id,
        dst_ip_at,
        dst_ip_id,
        dst_port_at,
        dst_port_id,
        protocol_at,
        protocol_id,
        name_at,
        name_id,
        product_at,
        product_id,
        version_at,
        version_id,
    ]
}

/// Appends the folded rows, as one record batch (`columns::current`), to
/// the temporary table `stage_current` on `conn` (DuckDB).
///
/// # Errors
/// DuckDB's error.
pub(crate) fn append_current(
    conn: &duckdb::Connection,
    batch: duckdb::arrow::record_batch::RecordBatch,
) -> duckdb_adapter::Result<()> {
    let mut appender =
        conn.appender_to_catalog_and_db("stage_current", TEMP_CATALOG, TEMP_SCHEMA)?;
    appender.append_record_batch(batch)?;
    Ok(appender.flush()?)
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

/// Appends `ids` (`rows` of them) to the one-column temporary table
/// `table` on `conn`, as one record batch.
///
/// # Errors
/// DuckDB's error.
pub(crate) fn append_ids<'a>(
    conn: &duckdb::Connection,
    table: &str,
    rows: usize,
    ids: impl Iterator<Item = &'a str>,
) -> duckdb_adapter::Result<()> {
    let batch = super::columns::ids(rows, ids)?;
    let mut appender = conn.appender_to_catalog_and_db(table, TEMP_CATALOG, TEMP_SCHEMA)?;
    appender.append_record_batch(batch)?;
    Ok(appender.flush()?)
}

/// Appends `keys` to the temporary table `stage_keys` on `conn`, as one
/// record batch.
///
/// # Errors
/// DuckDB's error.
pub(crate) fn append_keys(conn: &duckdb::Connection, keys: &[u64]) -> duckdb_adapter::Result<()> {
    let batch = super::columns::keys(keys)?;
    let mut appender = conn.appender_to_catalog_and_db("stage_keys", TEMP_CATALOG, TEMP_SCHEMA)?;
    appender.append_record_batch(batch)?;
    Ok(appender.flush()?)
}
