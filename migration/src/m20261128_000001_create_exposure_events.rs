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
            .create_table(
                Table::create()
                    .table(ExposureEvents::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ExposureEvents::EventId)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
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
                    .to_owned(),
            )
            .await?;

        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_exposure_events_office_timestamp")
                    .table(ExposureEvents::Table)
                    .col(ExposureEvents::OfficeId)
                    .col(ExposureEvents::Timestamp)
                    .to_owned(),
            )
            .await?;

        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_exposure_events_asset_timestamp")
                    .table(ExposureEvents::Table)
                    .col(ExposureEvents::AssetId)
                    .col(ExposureEvents::Timestamp)
                    .to_owned(),
            )
            .await?;

        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_exposure_events_scan_run")
                    .table(ExposureEvents::Table)
                    .col(ExposureEvents::ScanRunId)
                    .to_owned(),
            )
            .await
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

/// Identifiers of the `exposure_events` table.
#[derive(DeriveIden)]
enum ExposureEvents {
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
