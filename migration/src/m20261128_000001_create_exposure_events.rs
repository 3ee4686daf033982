//! Creates `exposure_events`, the append-only audit log of exposure changes,
//! keyed by `event_id`, and its indexes.

use sea_orm_migration::prelude::*;

/// Allowed values of `severity` (frozen copy: migrations must not depend on
/// the current entity definitions).
const SEVERITIES: [&str; 5] = ["info", "low", "medium", "high", "critical"];
/// Allowed values of `status`.
const STATUSES: [&str; 4] = ["open", "closed", "mitigated", "accepted"];
/// Allowed values of `event_action`.
const EVENT_ACTIONS: [&str; 4] = ["opened", "updated", "closed", "reopened"];

/// Creates the `exposure_events` table and its indexes.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(table(ExposureEvents::Table, true))
            .await?;
        for index in indexes() {
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Dropping the table drops its indexes too.
        manager
            .drop_table(
                Table::drop()
                    .table(ExposureEvents::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

/// `CREATE TABLE IF NOT EXISTS name (...)` with the columns of
/// `exposure_events`, `event_id` its primary key when `primary_key` (the
/// keyless form is migration 6's, on DuckDB).
pub(crate) fn table(name: impl IntoIden, primary_key: bool) -> TableCreateStatement {
    let mut event_id = ColumnDef::new(ExposureEvents::EventId);
    event_id.string().not_null();
    if primary_key {
        event_id.primary_key();
    }
    let mut t = Table::create();
    t.table(name).if_not_exists().col(event_id);
    t.col(
        ColumnDef::new(ExposureEvents::Timestamp)
            .timestamp_with_time_zone()
            .not_null(),
    )
    .col(ColumnDef::new(ExposureEvents::OfficeId).string().not_null())
    .col(ColumnDef::new(ExposureEvents::AssetId).string().not_null())
    .col(
        ColumnDef::new(ExposureEvents::ExposureId)
            .string()
            .not_null(),
    )
    .col(
        ColumnDef::new(ExposureEvents::ExposureClass)
            .string()
            .not_null(),
    )
    .col(
        ColumnDef::new(ExposureEvents::EventAction)
            .string()
            .not_null()
            .check(Expr::col(ExposureEvents::EventAction).is_in(EVENT_ACTIONS)),
    )
    .col(
        ColumnDef::new(ExposureEvents::Status)
            .string()
            .not_null()
            .check(Expr::col(ExposureEvents::Status).is_in(STATUSES)),
    )
    .col(
        ColumnDef::new(ExposureEvents::Severity)
            .string()
            .not_null()
            .check(Expr::col(ExposureEvents::Severity).is_in(SEVERITIES)),
    )
    .col(
        ColumnDef::new(ExposureEvents::RiskScore)
            .double()
            .not_null(),
    )
    .col(ColumnDef::new(ExposureEvents::Hostname).string().null())
    .col(ColumnDef::new(ExposureEvents::AssetIp).string().null())
    .col(ColumnDef::new(ExposureEvents::DstIp).string().null())
    .col(ColumnDef::new(ExposureEvents::DstPort).integer().null())
    .col(ColumnDef::new(ExposureEvents::Protocol).string().null())
    .col(ColumnDef::new(ExposureEvents::ServiceName).string().null())
    .col(
        ColumnDef::new(ExposureEvents::ServiceProduct)
            .string()
            .null(),
    )
    .col(
        ColumnDef::new(ExposureEvents::ServiceVersion)
            .string()
            .null(),
    )
    .col(ColumnDef::new(ExposureEvents::ScanRunId).string().null())
    .col(ColumnDef::new(ExposureEvents::RawPayloadJson).json().null())
    .to_owned()
}

/// The secondary indexes of `exposure_events` (dropped on DuckDB by
/// migration 6).
pub(crate) fn indexes() -> [IndexCreateStatement; 3] {
    let index = |name: &str, columns: &[ExposureEvents]| {
        let mut index = Index::create();
        index
            .if_not_exists()
            .name(name)
            .table(ExposureEvents::Table);
        for &column in columns {
            index.col(column);
        }
        index
    };
    [
        index(
            "idx_exposure_events_office_timestamp",
            &[ExposureEvents::OfficeId, ExposureEvents::Timestamp],
        ),
        index(
            "idx_exposure_events_asset_timestamp",
            &[ExposureEvents::AssetId, ExposureEvents::Timestamp],
        ),
        index("idx_exposure_events_scan_run", &[ExposureEvents::ScanRunId]),
    ]
}

/// Identifiers of the `exposure_events` table.
#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum ExposureEvents {
    Table,
    EventId,
    Timestamp,
    OfficeId,
    AssetId,
    ExposureId,
    ExposureClass,
    EventAction,
    Status,
    Severity,
    RiskScore,
    Hostname,
    AssetIp,
    DstIp,
    DstPort,
    Protocol,
    ServiceName,
    ServiceProduct,
    ServiceVersion,
    ScanRunId,
    RawPayloadJson,
}
