//! Schema migrations of exposure-store.
//!
//! The DDL is rendered with the PostgreSQL query builder and must run
//! unchanged on both DuckDB and PostgreSQL. It therefore avoids what DuckDB
//! rejects (identity/serial columns, `jsonb`, cascading foreign keys,
//! multi-action `ALTER TABLE`): ids come from an explicit sequence, JSON is
//! plain `json`, scores are `double precision`, and enumerated text columns
//! are restricted with `CHECK` constraints. Every `CREATE` uses
//! `IF NOT EXISTS` (so an existing, hand-made database is adopted) and every
//! `DROP` uses `IF EXISTS`.

pub use sea_orm_migration::prelude::*;

pub mod commands;
mod m20261128_000001_create_exposure_events;
mod m20261128_000002_create_exposures_current;
mod m20261128_000003_create_quarantined_files;
mod m20261128_000004_drop_current_indexes_on_duckdb;
mod m20261128_000005_add_current_provenance;
mod m20261128_000006_key_events_on_duckdb;

pub use m20261128_000006_key_events_on_duckdb::EVENT_KEY_SQL;

/// The list of migrations of exposure-store, in the order they are applied.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_create_exposure_events::Migration),
            Box::new(m20261128_000002_create_exposures_current::Migration),
            Box::new(m20261128_000003_create_quarantined_files::Migration),
            Box::new(m20261128_000004_drop_current_indexes_on_duckdb::Migration),
            Box::new(m20261128_000005_add_current_provenance::Migration),
            Box::new(m20261128_000006_key_events_on_duckdb::Migration),
        ]
    }
}

/// Whether the migration runs on DuckDB: both engines speak the PostgreSQL
/// dialect here, but only PostgreSQL's `version()` says "PostgreSQL".
async fn on_duckdb(manager: &SchemaManager<'_>) -> Result<bool, DbErr> {
    use sea_orm_migration::sea_orm::{ConnectionTrait as _, Statement};
    let conn = manager.get_connection();
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT version() AS v",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("SELECT version() returned no row".to_owned()))?;
    let version: String = row.try_get("", "v")?;
    Ok(!version.starts_with("PostgreSQL"))
}
