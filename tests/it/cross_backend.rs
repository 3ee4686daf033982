//! The two engines side by side: the same files give the same tables on
//! DuckDB and on PostgreSQL, and several processes ingesting into one
//! PostgreSQL database at once give the result of one sequential ingest.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use exposure_store::entity::prelude::*;
use exposure_store::entity::{exposure_current, exposure_event, quarantined_file};
use exposure_store::{Database, ExposureEvent};
use sea_orm::{EntityTrait, QueryOrder};

use crate::helpers::{TestResult, generated_file, postgres_database};

const BIN: &str = env!("CARGO_BIN_EXE_exposure-store");

/// Everything a user can read back, in a stable order (quarantine rows
/// without their id and time, which differ by nature).
#[derive(Debug, PartialEq)]
struct Tables {
    events: Vec<exposure_event::Model>,
    current: Vec<exposure_current::Model>,
    quarantined: Vec<(String, String, String, Option<serde_json::Value>)>,
}

async fn tables(db: &Database) -> TestResult<Tables> {
    Ok(Tables {
        events: ExposureEvents::find()
            .order_by_asc(exposure_event::Column::EventId)
            .all(db)
            .await?,
        current: ExposuresCurrent::find()
            .order_by_asc(exposure_current::Column::OfficeId)
            .order_by_asc(exposure_current::Column::ExposureId)
            .all(db)
            .await?,
        quarantined: QuarantinedFiles::find()
            .order_by_asc(quarantined_file::Column::Id)
            .all(db)
            .await?
            .into_iter()
            .map(|q| {
                (
                    q.filename,
                    q.error_type,
                    q.error_message,
                    q.error_details_json,
                )
            })
            .collect(),
    })
}

fn generated(path: &Path, events: u64, exposures: u64, seed: u64) -> TestResult<PathBuf> {
    generated_file(path, events, exposures, 4, seed)
}

fn ingest(db_args: &[String], files: &[PathBuf]) -> std::io::Result<std::process::Child> {
    Command::new(BIN)
        .args(db_args)
        .args(["ingest", "--json", "--chunk-size", "250"])
        .args(files)
        .env_remove("DATABASE_URL")
        .env_remove("DB_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

fn report(out: &Output) -> TestResult<serde_json::Value> {
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "{e}: stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into()
    })
}

/// Generated scan files (late events, NULL-heavy details, keys shared
/// between files), a re-delivered file and a broken one, ingested through
/// the CLI into each engine: every table is identical, and so is what the
/// CLI reported.
#[tokio::test]
async fn the_same_files_give_identical_tables_on_both_engines() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut files = Vec::new();
    for seed in 0..4 {
        let path = dir.path().join(format!("scan-{seed}.ndjson"));
        files.push(generated(&path, 1_500, 200, 40 + seed)?);
    }
    files.push(files[1].clone()); // re-delivered: all skipped
    let broken = dir.path().join("broken.ndjson");
    std::fs::write(&broken, "{\"event_id\": 1}\n")?;
    files.push(broken);

    let duckdb_path = dir.path().join("exposures.duckdb");
    let url = postgres_database().await?;
    let engines = [
        vec!["--db".to_owned(), duckdb_path.display().to_string()],
        vec!["--database-url".to_owned(), url.clone()],
    ];
    let mut reports = Vec::new();
    for args in &engines {
        let out = ingest(args, &files)?.wait_with_output()?;
        assert_eq!(out.status.code(), Some(1), "one file is broken");
        let mut report = report(&out)?;
        report["peak_rss_bytes"] = serde_json::Value::Null;
        reports.push(report);
    }
    assert_eq!(reports[0], reports[1]);
    assert_eq!(reports[0]["files_ingested"], 5);
    assert_eq!(reports[0]["totals"]["events_skipped"], 1_500);

    let on_duckdb = tables(&Database::open(&duckdb_path)?).await?;
    let on_postgres = tables(&Database::connect(&url).await?).await?;
    assert_eq!(on_duckdb.events.len(), 6_000);
    assert!(on_duckdb.current.len() > 150);
    assert_eq!(on_duckdb.quarantined.len(), 1);
    assert_eq!(on_duckdb, on_postgres);
    Ok(())
}

/// Six processes ingest overlapping windows of one event stream into one
/// PostgreSQL database at the same time (every event is in two or three
/// files; every exposure in all of them): each event is stored once, and
/// both tables equal a sequential ingest of the stream.
#[tokio::test]
async fn concurrent_processes_on_postgres_equal_a_sequential_ingest() -> TestResult {
    let dir = tempfile::tempdir()?;
    let stream = generated(&dir.path().join("stream.ndjson"), 6_000, 150, 77)?;
    let lines: Vec<String> = std::fs::read_to_string(&stream)?
        .lines()
        .map(str::to_owned)
        .collect();
    let mut windows = Vec::new();
    for worker in 0..6 {
        let window: Vec<&str> = lines
            .iter()
            .skip(worker * 800)
            .take(2_000)
            .map(String::as_str)
            .collect();
        let path = dir.path().join(format!("window-{worker}.ndjson"));
        std::fs::write(&path, window.join("\n"))?;
        windows.push(path);
    }
    // Window 5 ends at event 6,000; windows overlap by 1,200 events.
    let url = postgres_database().await?;
    Database::connect(&url).await?.init().await?;
    let args = vec!["--database-url".to_owned(), url.clone()];
    let workers = windows
        .iter()
        .map(|w| ingest(&args, std::slice::from_ref(w)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut inserted = 0;
    for worker in workers {
        let out = worker.wait_with_output()?;
        let report = report(&out)?;
        assert_eq!(out.status.code(), Some(0), "{report}");
        inserted += report["totals"]["events_inserted"]
            .as_u64()
            .ok_or("no count")?;
    }
    assert_eq!(
        inserted, 6_000,
        "each event is inserted by exactly one process"
    );

    let sequential = crate::helpers::TestDb::duckdb().await?;
    let events: Vec<ExposureEvent> = lines
        .iter()
        .map(|l| serde_json::from_str(l))
        .collect::<Result<_, _>>()?;
    crate::helpers::ingest(&sequential.db, 250, &events).await?;
    let concurrent = tables(&Database::connect(&url).await?).await?;
    // The generator gives each exposure fixed details (or NULL), so the
    // order in which the files commit cannot change them.
    assert_eq!(concurrent, tables(&sequential.db).await?);
    Ok(())
}

/// One call touching more keys than PostgreSQL's shared lock table holds
/// (64 per connection slot, 19,200 on the test server: one advisory lock
/// per key failed here with "out of shared memory" once) ingests, and says
/// that every key was inserted.
#[tokio::test]
async fn a_file_with_more_keys_than_the_lock_table_ingests_on_postgres() -> TestResult {
    let t = crate::helpers::TestDb::new(crate::helpers::Backend::Postgres).await?;
    let events: Vec<ExposureEvent> = (0..100_000)
        .map(|i| {
            crate::helpers::input(
                &format!("e{i}"),
                "2025-01-01T00:00:00Z",
                &format!("office-{}", i % 7),
                &format!("EXP-{i}"),
            )
        })
        .collect();
    let stats = crate::helpers::ingest(&t.db, 25_000, &events).await?;
    assert_eq!(stats.exposures_inserted, 100_000);
    Ok(())
}

/// PostgreSQL: another writer commits a newer event of the same key while
/// an ingestion is between its fold and its finish. The merge of the two
/// gives the state of all three events (the newer event's status and
/// hostname, the only version the older ones carry, the earliest
/// `first_seen`), and the key counts as updated, not inserted.
#[tokio::test]
async fn a_key_changed_by_another_writer_mid_ingest_merges_with_it() -> TestResult {
    use exposure_store::{ExposureRepository, IngestStats};
    let t = crate::helpers::TestDb::new(crate::helpers::Backend::Postgres).await?;
    let mut older = crate::helpers::input("older", "2025-01-01T00:00:10Z", "o", "x");
    older.hostname = Some("from-the-older-event".to_owned());
    older.service_version = None;
    let mut newer = crate::helpers::input("newer", "2025-01-01T00:00:20Z", "o", "x");
    newer.hostname = Some("from-the-newer-event".to_owned());
    newer.service_version = None;
    newer.status = exposure_store::entity::Status::Closed;
    let mut filler = crate::helpers::input("filler", "2025-01-01T00:00:05Z", "o", "x");
    filler.service_version = Some("9.9".to_owned());

    let repo = ExposureRepository::default();
    let session = t.db.begin().await?;
    let mut ingestion = repo.ingestion(&session).await?;
    ingestion.push(&[older, filler]).await?; // a new key when folded
    // Another writer stores a newer event of the key and commits.
    let other = crate::helpers::ingest(&t.db, 10, &[newer]).await?;
    assert_eq!(other.exposures_inserted, 1);
    let stats = ingestion.finish().await?;
    session.commit().await?;
    assert_eq!(
        stats,
        IngestStats {
            events_inserted: 2,
            events_skipped: 0,
            exposures_inserted: 0,
            exposures_updated: 1,
        }
    );
    let row = ExposuresCurrent::find_by_id(("o".to_owned(), "x".to_owned()))
        .one(&t.db)
        .await?
        .ok_or("no row")?;
    assert_eq!(row.hostname.as_deref(), Some("from-the-newer-event"));
    assert_eq!(row.status, exposure_store::entity::Status::Closed);
    assert_eq!(
        row.service_version.as_deref(),
        Some("9.9"),
        "a detail comes from the greatest event that has it"
    );
    assert_eq!(row.first_seen, crate::helpers::ts("2025-01-01T00:00:05Z"));
    Ok(())
}
