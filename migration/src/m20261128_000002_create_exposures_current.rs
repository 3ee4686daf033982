//! Creates `exposures_current`, the latest state per
//! `(office_id, exposure_id)` (upserted as events are applied), and its
//! indexes.

use sea_orm_migration::prelude::*;

/// Allowed values of `severity` (frozen copy: migrations must not depend on
/// the current entity definitions).
const SEVERITIES: [&str; 5] = ["info", "low", "medium", "high", "critical"];
/// Allowed values of `status`.
const STATUSES: [&str; 4] = ["open", "closed", "mitigated", "accepted"];
/// Allowed values of `event_action`.
const EVENT_ACTIONS: [&str; 4] = ["opened", "updated", "closed", "reopened"];

/// Creates the `exposures_current` table and its indexes.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ExposuresCurrent::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ExposuresCurrent::OfficeId)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ExposuresCurrent::ExposureId)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ExposuresCurrent::ExposureClass)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ExposuresCurrent::Status)
                            .string()
                            .not_null()
                            .check(Expr::col(ExposuresCurrent::Status).is_in(STATUSES)),
                    )
                    .col(
                        ColumnDef::new(ExposuresCurrent::Severity)
                            .string()
                            .not_null()
                            .check(Expr::col(ExposuresCurrent::Severity).is_in(SEVERITIES)),
                    )
                    .col(
                        ColumnDef::new(ExposuresCurrent::EventAction)
                            .string()
                            .not_null()
                            .check(Expr::col(ExposuresCurrent::EventAction).is_in(EVENT_ACTIONS)),
                    )
                    .col(
                        ColumnDef::new(ExposuresCurrent::RiskScore)
                            .double()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ExposuresCurrent::FirstSeen)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ExposuresCurrent::LastSeen)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ExposuresCurrent::AssetId)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(ExposuresCurrent::Hostname).string().null())
                    .col(ColumnDef::new(ExposuresCurrent::AssetIp).string().null())
                    .col(ColumnDef::new(ExposuresCurrent::DstIp).string().null())
                    .col(ColumnDef::new(ExposuresCurrent::DstPort).integer().null())
                    .col(ColumnDef::new(ExposuresCurrent::Protocol).string().null())
                    .col(
                        ColumnDef::new(ExposuresCurrent::ServiceName)
                            .string()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ExposuresCurrent::ServiceProduct)
                            .string()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ExposuresCurrent::ServiceVersion)
                            .string()
                            .null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(ExposuresCurrent::OfficeId)
                            .col(ExposuresCurrent::ExposureId),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_exposures_current_office_class")
                    .table(ExposuresCurrent::Table)
                    .col(ExposuresCurrent::OfficeId)
                    .col(ExposuresCurrent::ExposureClass)
                    .to_owned(),
            )
            .await?;

        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_exposures_current_status_severity")
                    .table(ExposuresCurrent::Table)
                    .col(ExposuresCurrent::Status)
                    .col(ExposuresCurrent::Severity)
                    .to_owned(),
            )
            .await?;

        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_exposures_current_last_seen")
                    .table(ExposuresCurrent::Table)
                    .col(ExposuresCurrent::LastSeen)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Dropping the table drops its indexes too.
        manager
            .drop_table(
                Table::drop()
                    .table(ExposuresCurrent::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

/// Identifiers of the `exposures_current` table.
#[derive(DeriveIden)]
enum ExposuresCurrent {
    Table,
    OfficeId,
    ExposureId,
    ExposureClass,
    Status,
    Severity,
    EventAction,
    RiskScore,
    FirstSeen,
    LastSeen,
    AssetId,
    Hostname,
    AssetIp,
    DstIp,
    DstPort,
    Protocol,
    ServiceName,
    ServiceProduct,
    ServiceVersion,
}
