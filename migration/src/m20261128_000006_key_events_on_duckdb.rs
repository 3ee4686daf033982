//! DuckDB only: `exposure_events` without ART indexes, with a fixed-width
//! `event_key` instead. PostgreSQL keeps its primary key and indexes (this
//! migration does nothing there).
//!
//! Why, measured (1M-event files, 100k exposures; README, *Performance*):
//! DuckDB maintains an ART index whole, in memory, inside the transaction
//! that writes to it, and writes it out again at every checkpoint. With the
//! primary key on the 36-byte `event_id` and the three secondary indexes,
//! ingesting a million events into a database holding 8 million took 2.3 GB
//! and half the speed of the first million, and the file grew by ~490 MiB
//! per million events. None of our reads use the secondary indexes (the
//! dashboard reads `exposures_current`; a time-range scan of the log is a
//! columnar scan pruned by zone maps), and the primary key's uniqueness is
//! enforced by the writer instead: it looks a file's ids up once, by
//! `event_key`, and compares the full ids of the rows whose key matches
//! (see the main crate's `repository` module).
//!
//! `event_key` is the upper 64 bits of the id's MD5, which DuckDB computes
//! as `(md5_number(event_id) >> 64)::UBIGINT` (here, for the rows already
//! stored) and the application in Rust for new rows. Eight bytes per event
//! scan at gigabytes per second; a collision only costs a comparison of the
//! full ids. A row written by another tool without a key (NULL) is still
//! found: the writer compares the ids of such rows too.
//!
//! The table is rebuilt (DuckDB cannot drop a primary key in place): its
//! rows are copied in their order, then the old table is dropped.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::Statement;

use crate::m20261128_000001_create_exposure_events::{self as events, ExposureEvents};
use crate::on_duckdb;

/// How DuckDB computes `event_key` from `event_id`; the application's Rust
/// computation must agree (it is tested against this).
pub const EVENT_KEY_SQL: &str = r#"(md5_number("event_id") >> 64)::UBIGINT"#;

/// The columns of `exposure_events` before this migration, in table order.
const COLUMNS: [ExposureEvents; 20] = [
    ExposureEvents::EventId,
    ExposureEvents::Timestamp,
    ExposureEvents::OfficeId,
    ExposureEvents::AssetId,
    ExposureEvents::ExposureId,
    ExposureEvents::ExposureClass,
    ExposureEvents::EventAction,
    ExposureEvents::Status,
    ExposureEvents::Severity,
    ExposureEvents::RiskScore,
    ExposureEvents::Hostname,
    ExposureEvents::AssetIp,
    ExposureEvents::DstIp,
    ExposureEvents::DstPort,
    ExposureEvents::Protocol,
    ExposureEvents::ServiceName,
    ExposureEvents::ServiceProduct,
    ExposureEvents::ServiceVersion,
    ExposureEvents::ScanRunId,
    ExposureEvents::RawPayloadJson,
];

/// The table being built, renamed to `exposure_events` at the end.
const REBUILT: &str = "exposure_events_rebuilt";

/// Rebuilds `exposure_events` on DuckDB without indexes, with `event_key`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !on_duckdb(manager).await? {
            return Ok(());
        }
        let mut table = events::table(Alias::new(REBUILT), false);
        table.col(ColumnDef::new(EventKey::EventKey).custom(Alias::new("UBIGINT")));
        manager.create_table(table).await?;
        let columns = column_list();
        copy_and_swap(
            manager,
            &format!(r#"{columns}, "event_key""#),
            &format!("{columns}, {EVENT_KEY_SQL}"),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !on_duckdb(manager).await? {
            return Ok(());
        }
        manager
            .create_table(events::table(Alias::new(REBUILT), true))
            .await?;
        let columns = column_list();
        copy_and_swap(manager, &columns, &columns).await?;
        for index in events::indexes() {
            manager.create_index(index).await?;
        }
        Ok(())
    }
}

/// `"event_id", "timestamp", ...`
fn column_list() -> String {
    COLUMNS.map(|c| format!("\"{}\"", c.to_string())).join(", ")
}

/// Fills the rebuilt table from `exposure_events` (`INSERT INTO rebuilt
/// (into) SELECT select FROM exposure_events`, in the log's order), drops
/// the old table and gives the new one its name.
async fn copy_and_swap(manager: &SchemaManager<'_>, into: &str, select: &str) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    let backend = conn.get_database_backend();
    for sql in [
        format!(r#"INSERT INTO "{REBUILT}" ({into}) SELECT {select} FROM "exposure_events""#),
        r#"DROP TABLE "exposure_events""#.to_owned(),
        format!(r#"ALTER TABLE "{REBUILT}" RENAME TO "exposure_events""#),
    ] {
        conn.execute_raw(Statement::from_string(backend, sql))
            .await?;
    }
    Ok(())
}

/// The column this migration adds.
#[derive(DeriveIden, Clone, Copy)]
enum EventKey {
    EventKey,
}
