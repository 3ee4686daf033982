//! DuckDB only: drops the secondary indexes of `exposures_current`; the
//! primary key stays. PostgreSQL keeps them (this migration does nothing
//! there).
//!
//! Why: every ingest rewrites the current state of the keys it touches,
//! and DuckDB updates a row whose indexed columns change (`status`,
//! `severity`, `exposure_class`, `last_seen`) 60 times slower than one
//! whose indexed columns do not (100k keys: 13.8 s against 0.2 s). The way
//! around that, deleting the rows and inserting them again in the same
//! transaction, made DuckDB 2.0.0 read corrupted segments now and then (see
//! the README's *Reliability* section). Without the indexes the upsert
//! updates rows in place, fast, and the dashboard queries scan the table,
//! which takes milliseconds at this size (one row per exposure) thanks to
//! DuckDB's columnar scans and zone maps.

use crate::on_duckdb;
use sea_orm_migration::prelude::*;

/// The secondary indexes of migration 2, as (name, columns).
const INDEXES: [(&str, &[ExposuresCurrent]); 3] = [
    (
        "idx_exposures_current_office_class",
        &[ExposuresCurrent::OfficeId, ExposuresCurrent::ExposureClass],
    ),
    (
        "idx_exposures_current_status_severity",
        &[ExposuresCurrent::Status, ExposuresCurrent::Severity],
    ),
    (
        "idx_exposures_current_last_seen",
        &[ExposuresCurrent::LastSeen],
    ),
];

/// Drops the secondary indexes of `exposures_current` on DuckDB.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !on_duckdb(manager).await? {
            return Ok(());
        }
        for (name, _) in INDEXES {
            manager
                .drop_index(Index::drop().name(name).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !on_duckdb(manager).await? {
            return Ok(());
        }
        for (name, columns) in INDEXES {
            let mut index = Index::create();
            index
                .if_not_exists()
                .name(name)
                .table(ExposuresCurrent::Table);
            for &column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }
}

/// Identifiers of the `exposures_current` table.
#[derive(DeriveIden, Clone, Copy)]
enum ExposuresCurrent {
    Table,
    OfficeId,
    ExposureClass,
    Status,
    Severity,
    LastSeen,
}
