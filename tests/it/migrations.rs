//! Migrations: idempotent, concurrent-safe, every verb works on both
//! engines, the PostgreSQL schema has the intended types, and DuckDB adopts
//! hand-made databases.

use exposure_store::entity::prelude::*;
use exposure_store::migration::commands::{MigrateCommand, MigrationState};
use exposure_store::{Database, Error};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbBackend, EntityTrait, IntoActiveModel, PaginatorTrait,
    Statement,
};

use rstest::rstest;

use crate::helpers::{Backend, TestDb, TestResult, event};

fn applied(states: &[MigrationState]) -> usize {
    states.iter().filter(|s| s.applied).count()
}

#[rstest]
#[tokio::test]
async fn init_is_idempotent_and_keeps_data(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    event("kept", "2025-01-01T00:00:00Z")
        .into_active_model()
        .insert(&t.db)
        .await?;
    for _ in 0..3 {
        t.db.init().await?;
    }
    let states = t.db.migrate(MigrateCommand::Status).await?;
    assert_eq!(applied(&states), states.len());
    assert_eq!(states.len(), 6);
    assert_eq!(ExposureEvents::find().count(&t.db).await?, 1);
    Ok(())
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_init_is_safe(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("exposures.duckdb");
    let url = match backend {
        Backend::DuckDb => None,
        Backend::Postgres => Some(crate::helpers::postgres_database().await?),
    };
    // Separate handles (on PostgreSQL, separate pools: as separate
    // processes would be).
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (path, url) = (path.clone(), url.clone());
            tokio::spawn(async move {
                let db = match url {
                    Some(url) => Database::connect(&url).await?,
                    None => Database::open(&path)?,
                };
                db.init().await?;
                Ok::<_, Error>(db)
            })
        })
        .collect();
    let mut handles = Vec::new();
    for task in tasks {
        handles.push(task.await??);
    }
    let states = handles[0].migrate(MigrateCommand::Status).await?;
    assert_eq!(applied(&states), 6);
    Ok(())
}

#[rstest]
#[tokio::test]
async fn every_verb_works(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = match backend {
        Backend::DuckDb => Database::open(dir.path().join("verbs.duckdb"))?,
        Backend::Postgres => Database::connect(&crate::helpers::postgres_database().await?).await?,
    };

    let states = db.migrate(MigrateCommand::Up { num: Some(1) }).await?;
    assert_eq!(applied(&states), 1);
    let states = db.migrate(MigrateCommand::Up { num: None }).await?;
    assert_eq!(applied(&states), 6);
    event("x", "2025-01-01T00:00:00Z")
        .into_active_model()
        .insert(&db)
        .await?;

    let states = db.migrate(MigrateCommand::Down { num: 2 }).await?;
    assert_eq!(applied(&states), 4);
    let states = db.migrate(MigrateCommand::Refresh).await?;
    assert_eq!(applied(&states), 6);
    assert_eq!(
        ExposureEvents::find().count(&db).await?,
        0,
        "refresh rebuilt the tables"
    );

    event("y", "2025-01-01T00:00:00Z")
        .into_active_model()
        .insert(&db)
        .await?;
    let states = db.migrate(MigrateCommand::Fresh).await?;
    assert_eq!(applied(&states), 6);
    assert_eq!(
        ExposureEvents::find().count(&db).await?,
        0,
        "fresh dropped the data"
    );
    // The quarantine id sequence was dropped and recreated too.
    let q = exposure_store::entity::quarantined_file::ActiveModel {
        filename: sea_orm::ActiveValue::Set("f".to_owned()),
        error_type: sea_orm::ActiveValue::Set("io_error".to_owned()),
        error_message: sea_orm::ActiveValue::Set("gone".to_owned()),
        ..Default::default()
    };
    assert_eq!(q.insert(&db).await?.id, 1);

    let states = db.migrate(MigrateCommand::Reset).await?;
    assert_eq!(applied(&states), 0);
    assert!(
        ExposureEvents::find().count(&db).await.is_err(),
        "reset dropped the tables"
    );
    Ok(())
}

#[tokio::test]
async fn a_hand_made_database_is_adopted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("legacy.duckdb");
    {
        // What an older deployment created by hand, with data in it.
        let conn = duckdb::Connection::open(&path)?;
        conn.execute_batch(
            r#"CREATE TABLE exposure_events (
                 event_id VARCHAR PRIMARY KEY, "timestamp" TIMESTAMPTZ NOT NULL,
                 office_id VARCHAR NOT NULL, asset_id VARCHAR NOT NULL,
                 exposure_id VARCHAR NOT NULL, exposure_class VARCHAR NOT NULL,
                 event_action VARCHAR NOT NULL, status VARCHAR NOT NULL,
                 severity VARCHAR NOT NULL, risk_score DOUBLE NOT NULL,
                 hostname VARCHAR, asset_ip VARCHAR, dst_ip VARCHAR, dst_port INTEGER,
                 protocol VARCHAR, service_name VARCHAR, service_product VARCHAR,
                 service_version VARCHAR, scan_run_id VARCHAR, raw_payload_json JSON);
               CREATE INDEX idx_exposure_events_office_timestamp ON exposure_events (office_id, "timestamp");
               INSERT INTO exposure_events (event_id, "timestamp", office_id, asset_id, exposure_id,
                 exposure_class, event_action, status, severity, risk_score)
               VALUES ('legacy-1', TIMESTAMPTZ '2024-06-01 00:00:00+00', 'o', 'a', 'x', 'c',
                 'opened', 'open', 'low', 1.0);"#,
        )?;
    }
    let db = Database::open(&path)?;
    db.init().await?;
    assert_eq!(applied(&db.migrate(MigrateCommand::Status).await?), 6);
    let legacy = ExposureEvents::find_by_id("legacy-1".to_owned())
        .one(&db)
        .await?;
    assert_eq!(legacy.map(|e| e.severity), Some(Severity::Low));
    assert_eq!(
        ExposuresCurrent::find().count(&db).await?,
        0,
        "missing tables were created"
    );
    Ok(())
}

/// The same migrations give PostgreSQL its native types: `timestamptz`,
/// `json`, `double precision`, and the CHECK constraints of the closed
/// vocabularies.
#[tokio::test]
async fn the_postgres_schema_has_the_intended_types() -> TestResult {
    let t = TestDb::new(Backend::Postgres).await?;
    let types: Vec<(String, String, String)> =
        t.db.query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT table_name::text, column_name::text, data_type::text \
             FROM information_schema.columns WHERE table_schema = current_schema() \
             AND column_name IN ('timestamp', 'first_seen', 'raw_payload_json', \
             'error_details_json', 'risk_score', 'dst_port', 'id') \
             ORDER BY 1, 2",
        ))
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get("", "table_name")?,
                r.try_get("", "column_name")?,
                r.try_get("", "data_type")?,
            ))
        })
        .collect::<Result<_, sea_orm::DbErr>>()?;
    let expect = |t: &str, c: &str, d: &str| (t.to_owned(), c.to_owned(), d.to_owned());
    assert_eq!(
        types,
        vec![
            expect("exposure_events", "dst_port", "integer"),
            expect("exposure_events", "raw_payload_json", "json"),
            expect("exposure_events", "risk_score", "double precision"),
            expect("exposure_events", "timestamp", "timestamp with time zone"),
            expect("exposures_current", "dst_port", "integer"),
            expect(
                "exposures_current",
                "first_seen",
                "timestamp with time zone"
            ),
            expect("exposures_current", "risk_score", "double precision"),
            expect("quarantined_files", "error_details_json", "json"),
            expect("quarantined_files", "id", "bigint"),
        ]
    );
    let checks =
        t.db.query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM information_schema.check_constraints \
             WHERE constraint_schema = current_schema() AND constraint_name NOT LIKE '%_not_null'",
        ))
        .await?
        .ok_or("no count")?
        .try_get::<i64>("", "n")?;
    assert!(checks >= 6, "only {checks} CHECK constraints");
    // PostgreSQL keeps the secondary indexes of `exposures_current` (only
    // DuckDB drops them, in migration 4).
    let indexes =
        t.db.query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM pg_indexes WHERE schemaname = current_schema() \
             AND indexname LIKE 'idx_exposures_current_%'",
        ))
        .await?
        .ok_or("no count")?
        .try_get::<i64>("", "n")?;
    assert_eq!(indexes, 3);
    Ok(())
}

#[tokio::test]
async fn a_plain_duckdb_client_can_read_the_database() -> TestResult {
    let t = TestDb::duckdb().await?;
    event("plain", "2025-01-01T00:00:00Z")
        .into_active_model()
        .insert(&t.db)
        .await?;
    let TestDb { db, path, dir, .. } = t;
    drop(db);
    let conn = duckdb::Connection::open(&path)?;
    let (id, sev): (String, String) = conn.query_row(
        "SELECT event_id, severity FROM exposure_events",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    assert_eq!((id.as_str(), sev.as_str()), ("plain", "medium"));
    // No index on DuckDB but the primary key of `exposures_current`
    // (migrations 4 and 6); the log's rows carry `event_key`.
    let indexes: i64 = conn.query_row("SELECT count(*) FROM duckdb_indexes()", [], |row| {
        row.get(0)
    })?;
    assert_eq!(indexes, 0);
    let constraints: Vec<String> = conn
        .prepare(
            "SELECT table_name || ' ' || constraint_type FROM duckdb_constraints() \
             WHERE constraint_type IN ('PRIMARY KEY', 'UNIQUE') AND table_name LIKE 'exposure%' \
             ORDER BY 1",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    assert_eq!(constraints, ["exposures_current PRIMARY KEY"]);
    let on_current: i64 = conn.query_row(
        "SELECT count(*) FROM duckdb_indexes() WHERE table_name = 'exposures_current'",
        [],
        |row| row.get(0),
    )?;
    assert_eq!(on_current, 0);
    drop(dir);
    Ok(())
}
