//! Adds the provenance of `exposures_current`: which event the latest
//! columns and each optional detail come from.
//!
//! With it the current state is a function of the audit log alone (see the
//! README's *Current state*): a stored row is merged with new events by
//! comparing `(timestamp, event_id)` per column, which gives the same result
//! in any arrival order. The columns:
//!
//! - `last_event_id`: the id of the greatest event (`last_seen` is its
//!   timestamp);
//! - per detail `f`: `f_seen_at` and `f_event_id`, the timestamp and id of
//!   the greatest event in which `f` is not NULL (both NULL when `f` is).
//!
//! Event ids are compared byte-wise. DuckDB compares text that way; on
//! PostgreSQL the id columns are declared `COLLATE "C"` so that comparisons
//! do not follow the database's locale.
//!
//! Rows stored before this migration get NULL provenance here; the
//! application fills them from the log (`rebuild`) right after migrating
//! (`exposure-store init`, or any command, does it).

use sea_orm_migration::prelude::*;

use crate::on_duckdb;

/// The optional details, each with a `_seen_at` and an `_event_id` column.
const DETAILS: [&str; 8] = [
    "hostname",
    "asset_ip",
    "dst_ip",
    "dst_port",
    "protocol",
    "service_name",
    "service_product",
    "service_version",
];

/// Adds the provenance columns to `exposures_current`.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// The new columns: `last_event_id`, then per detail its `_seen_at` and
/// `_event_id` (all nullable).
fn columns(duckdb: bool) -> Vec<ColumnDef> {
    let event_id = |name: String| {
        let mut column = ColumnDef::new(Alias::new(name));
        column.string().null();
        if !duckdb {
            column.extra(r#"COLLATE "C""#);
        }
        column
    };
    let mut columns = vec![event_id("last_event_id".to_owned())];
    for detail in DETAILS {
        columns.push(
            ColumnDef::new(Alias::new(format!("{detail}_seen_at")))
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        );
        columns.push(event_id(format!("{detail}_event_id")));
    }
    columns
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: DuckDB refuses multi-action ALTER TABLE.
        for mut column in columns(on_duckdb(manager).await?) {
            manager
                .alter_table(
                    Table::alter()
                        .table(ExposuresCurrent::Table)
                        .add_column_if_not_exists(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in columns(on_duckdb(manager).await?) {
            manager
                .alter_table(
                    Table::alter()
                        .table(ExposuresCurrent::Table)
                        .drop_column(column.get_column_name())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Identifiers of the `exposures_current` table.
#[derive(DeriveIden, Clone, Copy)]
enum ExposuresCurrent {
    Table,
}
