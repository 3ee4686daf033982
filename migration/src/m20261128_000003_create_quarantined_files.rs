//! Creates `quarantined_files`, the input files that failed to be ingested
//! with the reason, and the sequence its ids come from.
//!
//! DuckDB has no identity/serial columns, so the id is `bigint` with
//! `DEFAULT nextval('quarantined_files_id_seq')`, which both DuckDB and
//! PostgreSQL accept.

use sea_orm_migration::prelude::*;

/// Name of the sequence generating `quarantined_files.id`.
const ID_SEQUENCE: &str = "quarantined_files_id_seq";

/// sea-query has no builder for sequences: this constant DDL (no values) is
/// valid on both DuckDB and PostgreSQL.
const CREATE_ID_SEQUENCE: &str = "CREATE SEQUENCE IF NOT EXISTS quarantined_files_id_seq";

/// Counterpart of [`CREATE_ID_SEQUENCE`].
const DROP_ID_SEQUENCE: &str = "DROP SEQUENCE IF EXISTS quarantined_files_id_seq";

/// Creates the `quarantined_files_id_seq` sequence and the
/// `quarantined_files` table.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(CREATE_ID_SEQUENCE)
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(QuarantinedFiles::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(QuarantinedFiles::Id)
                            .big_integer()
                            .not_null()
                            // Renders as DEFAULT (nextval('quarantined_files_id_seq')).
                            .default(Func::cust("nextval").arg(ID_SEQUENCE))
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(QuarantinedFiles::Filename)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(QuarantinedFiles::ErrorType)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(QuarantinedFiles::ErrorMessage)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(QuarantinedFiles::ErrorDetailsJson)
                            .json()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(QuarantinedFiles::QuarantinedAt)
                            .timestamp_with_time_zone()
                            .not_null()
                            .default(Expr::current_timestamp()),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The table depends on the sequence (column default): drop it first.
        manager
            .drop_table(
                Table::drop()
                    .table(QuarantinedFiles::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .get_connection()
            .execute_unprepared(DROP_ID_SEQUENCE)
            .await?;

        Ok(())
    }
}

/// Identifiers of the `quarantined_files` table.
#[derive(DeriveIden)]
enum QuarantinedFiles {
    Table,
    Id,
    Filename,
    ErrorType,
    ErrorMessage,
    ErrorDetailsJson,
    QuarantinedAt,
}
