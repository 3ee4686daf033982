//! Bulk staging, inside the unit of work's transaction.
//!
//! - DuckDB: the Appender, fed Arrow record batches built column by column
//!   from the events and folds themselves (`columns.rs`);
//! - PostgreSQL: rows of typed sea-query values (so a NULL keeps its
//!   column's type) in multi-row `INSERT ... VALUES` statements, each under
//!   PostgreSQL's limit of 65,535 bound values.

use sea_orm::{ColumnTrait, Iterable};
use sea_query::Value;

use super::fold::{Folded, Sourced};
use crate::entity::exposure_current::Column as Cur;
use crate::entity::exposure_event::Column as Ev;
use crate::event::ExposureEvent;

/// Temporary tables live in DuckDB's `temp` catalog.
const TEMP_CATALOG: &str = "temp";
const TEMP_SCHEMA: &str = "main";

/// PostgreSQL binds at most 65,535 values per statement; batches stay well
/// below that (and equal-sized batches reuse one prepared statement).
const POSTGRES_MAX_VALUES: usize = 20_000;

/// A row of PostgreSQL's multi-row inserts (`statements::insert_rows`):
/// asked for its value column by column, so the insert's column list is
/// the only order there is, and a column the entity gains is a missing
/// `match` arm here.
pub(crate) trait Row {
    /// The entity's columns: the columns of the insert.
    type Column: ColumnTrait;

    /// The value of `column`, typed (a NULL keeps its column's type).
    fn value(&self, column: Self::Column) -> Value;
}

impl<R: Row> Row for &R {
    type Column = R::Column;

    fn value(&self, column: Self::Column) -> Value {
        (**self).value(column)
    }
}

fn text(s: &str) -> Value {
    Value::String(Some(s.to_owned()))
}

fn opt_text(s: Option<&String>) -> Value {
    Value::String(s.cloned())
}

fn micros(t: i64) -> Value {
    Value::ChronoDateTimeUtc(chrono::DateTime::from_timestamp_micros(t))
}

/// An event as a row of `exposure_events`. The payload is its JSON text
/// (the insert casts it to `json`, which keeps the text as it is).
impl Row for ExposureEvent {
    type Column = Ev;

    fn value(&self, column: Ev) -> Value {
        match column {
            Ev::EventId => text(&self.event_id),
            Ev::Timestamp => Value::ChronoDateTimeUtc(Some(self.timestamp)),
            Ev::OfficeId => text(&self.office_id),
            Ev::AssetId => text(&self.asset_id),
            Ev::ExposureId => text(&self.exposure_id),
            Ev::ExposureClass => text(&self.exposure_class),
            Ev::EventAction => text(self.event_action.as_str()),
            Ev::Status => text(self.status.as_str()),
            Ev::Severity => text(self.severity.as_str()),
            Ev::RiskScore => Value::Double(Some(self.risk_score)),
            Ev::Hostname => opt_text(self.hostname.as_ref()),
            Ev::AssetIp => opt_text(self.asset_ip.as_ref()),
            Ev::DstIp => opt_text(self.dst_ip.as_ref()),
            Ev::DstPort => Value::Int(self.dst_port),
            Ev::Protocol => opt_text(self.protocol.as_ref()),
            Ev::ServiceName => opt_text(self.service_name.as_ref()),
            Ev::ServiceProduct => opt_text(self.service_product.as_ref()),
            Ev::ServiceVersion => opt_text(self.service_version.as_ref()),
            Ev::ScanRunId => opt_text(self.scan_run_id.as_ref()),
            Ev::RawPayloadJson => Value::String(
                self.raw_payload_json
                    .as_ref()
                    .map(|p| p.as_str().to_owned()),
            ),
        }
    }
}

/// A text detail's value.
fn detail_text(d: Option<&Sourced<String>>) -> Value {
    Value::String(d.map(|d| d.value.clone()))
}

/// When the event a detail comes from happened.
fn seen_at<T>(d: Option<&Sourced<T>>) -> Value {
    Value::ChronoDateTimeUtc(d.and_then(|d| chrono::DateTime::from_timestamp_micros(d.from.at)))
}

/// The id of the event a detail comes from.
fn source_id<T>(d: Option<&Sourced<T>>) -> Value {
    Value::String(d.map(|d| d.from.event_id.to_string()))
}

/// A folded key as a row of `stage_current` (the columns of
/// `exposures_current`).
impl Row for Folded {
    type Column = Cur;

    fn value(&self, column: Cur) -> Value {
        let d = &self.details;
        match column {
            Cur::OfficeId => text(&self.office_id),
            Cur::ExposureId => text(&self.exposure_id),
            Cur::ExposureClass => text(&self.exposure_class),
            Cur::Status => text(self.status.as_str()),
            Cur::Severity => text(self.severity.as_str()),
            Cur::EventAction => text(self.event_action.as_str()),
            Cur::RiskScore => Value::Double(Some(self.risk_score)),
            Cur::FirstSeen => micros(self.first_seen),
            Cur::LastSeen => micros(self.last.at),
            Cur::AssetId => text(&self.asset_id),
            Cur::Hostname => detail_text(d.hostname.as_ref()),
            Cur::AssetIp => detail_text(d.asset_ip.as_ref()),
            Cur::DstIp => detail_text(d.dst_ip.as_ref()),
            Cur::DstPort => Value::Int(d.dst_port.as_ref().map(|p| p.value)),
            Cur::Protocol => detail_text(d.protocol.as_ref()),
            Cur::ServiceName => detail_text(d.service_name.as_ref()),
            Cur::ServiceProduct => detail_text(d.service_product.as_ref()),
            Cur::ServiceVersion => detail_text(d.service_version.as_ref()),
            Cur::LastEventId => text(&self.last.event_id),
            Cur::HostnameSeenAt => seen_at(d.hostname.as_ref()),
            Cur::HostnameEventId => source_id(d.hostname.as_ref()),
            Cur::AssetIpSeenAt => seen_at(d.asset_ip.as_ref()),
            Cur::AssetIpEventId => source_id(d.asset_ip.as_ref()),
            Cur::DstIpSeenAt => seen_at(d.dst_ip.as_ref()),
            Cur::DstIpEventId => source_id(d.dst_ip.as_ref()),
            Cur::DstPortSeenAt => seen_at(d.dst_port.as_ref()),
            Cur::DstPortEventId => source_id(d.dst_port.as_ref()),
            Cur::ProtocolSeenAt => seen_at(d.protocol.as_ref()),
            Cur::ProtocolEventId => source_id(d.protocol.as_ref()),
            Cur::ServiceNameSeenAt => seen_at(d.service_name.as_ref()),
            Cur::ServiceNameEventId => source_id(d.service_name.as_ref()),
            Cur::ServiceProductSeenAt => seen_at(d.service_product.as_ref()),
            Cur::ServiceProductEventId => source_id(d.service_product.as_ref()),
            Cur::ServiceVersionSeenAt => seen_at(d.service_version.as_ref()),
            Cur::ServiceVersionEventId => source_id(d.service_version.as_ref()),
        }
    }
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
pub(crate) fn postgres_batches<R: Row>(rows: Vec<R>) -> impl Iterator<Item = Vec<R>> {
    let per_row = R::Column::iter().count().max(1);
    let per_batch = (POSTGRES_MAX_VALUES / per_row).max(1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::exposure_event;
    use crate::entity::{EventAction, Severity, Status};
    use sea_orm::{IdenStatic, ModelTrait};

    #[test]
    fn an_event_gives_each_column_the_value_the_entity_has_there()
    -> Result<(), Box<dyn std::error::Error>> {
        // Every value distinct, so one given to another column shows.
        let model = exposure_event::Model {
            event_id: "event".into(),
            timestamp: chrono::DateTime::from_timestamp_micros(1_735_689_600_000_001)
                .ok_or("instant")?,
            office_id: "office".into(),
            asset_id: "asset".into(),
            exposure_id: "exposure".into(),
            exposure_class: "class".into(),
            event_action: EventAction::Updated,
            status: Status::Closed,
            severity: Severity::High,
            risk_score: 7.5,
            hostname: Some("host".into()),
            asset_ip: Some("10.0.0.1".into()),
            dst_ip: Some("10.0.0.2".into()),
            dst_port: Some(443),
            protocol: Some("tcp".into()),
            service_name: Some("https".into()),
            service_product: Some("nginx".into()),
            service_version: Some("1.2".into()),
            scan_run_id: Some("run".into()),
            raw_payload_json: Some(r#"{"a": 1}"#.into()),
        };
        let event = ExposureEvent::try_from(model.clone())?;
        for column in Ev::iter() {
            assert_eq!(
                event.value(column),
                model.get(column),
                "{}",
                column.as_str()
            );
        }
        Ok(())
    }
}
