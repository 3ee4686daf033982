//! Trustworthy DuckDB writes: a failed COMMIT never lets later files store
//! the wrong events, ordinary ingests never fail (stress, with and without
//! SIGKILL), an unclean shutdown is recovered before the first write, and
//! nothing is ever downloaded.
//!
//! Long runs: `STRESS_RUNS=500 KILL_RUNS=200 cargo test --release --test it containment`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use exposure_store::entity::prelude::*;
use exposure_store::entity::{exposure_current, exposure_event};
use exposure_store::{Database, ExposureRepository};
use sea_orm::{EntityTrait, PaginatorTrait, QueryOrder};

use crate::helpers::{TestResult, generated_file};

const BIN: &str = env!("CARGO_BIN_EXE_exposure-store");

type Tables = (Vec<exposure_event::Model>, Vec<exposure_current::Model>);

fn runs(variable: &str, default: u64) -> u64 {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Both tables of the DuckDB file at `path`, in key order.
async fn tables(path: &Path) -> TestResult<Tables> {
    let db = Database::open(path)?;
    Ok((
        ExposureEvents::find()
            .order_by_asc(exposure_event::Column::EventId)
            .all(&db)
            .await?,
        ExposuresCurrent::find()
            .order_by_asc(exposure_current::Column::OfficeId)
            .order_by_asc(exposure_current::Column::ExposureId)
            .all(&db)
            .await?,
    ))
}

fn generate_file(path: &Path, events: u64, exposures: u64, seed: u64) -> TestResult<PathBuf> {
    generated_file(path, events, exposures, 20, seed)
}

/// Splits the generated lines of `source` into files of `lines` lines.
fn split(source: &Path, dir: &Path, prefix: &str, lines: usize) -> TestResult<Vec<PathBuf>> {
    let text = std::fs::read_to_string(source)?;
    let all: Vec<&str> = text.lines().collect();
    let mut files = Vec::new();
    for (i, part) in all.chunks(lines).enumerate() {
        let path = dir.join(format!("{prefix}{i:02}.ndjson"));
        std::fs::write(&path, part.join("\n") + "\n")?;
        files.push(path);
    }
    Ok(files)
}

fn ingest(db: &Path, memory_limit: Option<&str>, files: &[PathBuf]) -> TestResult<Output> {
    let mut command = Command::new(BIN);
    command.arg("--db").arg(db);
    if let Some(limit) = memory_limit {
        command.args(["--memory-limit", limit]);
    }
    Ok(command
        .args(["ingest", "--json"])
        .args(files)
        .stdin(Stdio::null())
        .output()?)
}

fn report(output: &Output) -> TestResult<serde_json::Value> {
    serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "no JSON report ({e}); stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into()
    })
}

/// The memory-limit sweep of the failed-COMMIT bug: a 100k-event file that
/// may not fit DuckDB's memory, then 1 or 3 small files whose keys it also
/// touches, under every limit from 52 MB to 60 MB in steps of half a
/// megabyte: end to end, through the CLI. The big file is either ingested exactly or quarantined
/// (retryable, when its COMMIT failed) with nothing of it stored; a small
/// file is ingested, or, at limits too small for it, quarantined by an
/// out-of-memory error of its own statements; and both tables always equal
/// a clean run of exactly the files reported ingested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_never_corrupts_later_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Many events over few keys: the COMMIT, which copies the transaction's
    // 100k events into the table, then needs more memory than the
    // statements before it (with many keys, the current state's upsert
    // runs out of memory first, in a statement).
    let big = generate_file(&dir.path().join("big.ndjson"), 100_000, 500, 5)?;
    let few = generate_file(&dir.path().join("few.ndjson"), 9, 500, 6)?;
    let small = split(&few, dir.path(), "small-", 3)?;
    let mut all_files = vec![big];
    all_files.extend(small);

    // Clean runs (no memory limit) of each set of files reported ingested.
    let mut clean: HashMap<Vec<usize>, _> = HashMap::new();
    let mut failed_commits = Vec::new();
    // Every half megabyte from 52 to 60 MB, with 1 and 3 small files.
    let runs: Vec<(u32, usize)> = [1, 3]
        .into_iter()
        .flat_map(|smalls| (104..=120).map(move |half_mb| (half_mb, smalls)))
        .collect();
    for &(half_mb, smalls) in &runs {
        let files = &all_files[..=smalls];
        let db = dir.path().join(format!("sweep-{half_mb}-{smalls}.duckdb"));
        let limit = format!("{}MB", f64::from(half_mb) / 2.0);
        let out = ingest(&db, Some(&limit), files)?;
        let report = report(&out)?;
        let outcomes = report["files"].as_array().cloned().unwrap_or_default();
        assert_eq!(outcomes.len(), files.len(), "{limit}: {report}");
        let mut ingested = Vec::new();
        let mut commit_failed = false;
        for (i, f) in outcomes.iter().enumerate() {
            if f["outcome"] == "ingested" {
                ingested.push(i);
                continue;
            }
            let rejection = &f["rejection"];
            assert_eq!(
                rejection["error_type"], "database_error",
                "{limit}: {rejection}"
            );
            let message = rejection["message"].as_str().unwrap_or_default();
            if message.contains("COMMIT failed") {
                assert_eq!(i, 0, "{limit}: a small file's COMMIT failed: {message}");
                // Contained: tried again on a fresh instance, and
                // worth trying again later (with more memory).
                assert!(message.contains("failed twice"), "{limit}: {message}");
                assert_eq!(
                    rejection["details"]["retryable"], true,
                    "{limit}: {message}"
                );
                commit_failed = true;
            } else {
                assert!(
                    message.contains("Out of Memory") || message.contains("failed to pin"),
                    "{limit}: file {i}: {message}"
                );
            }
        }
        if commit_failed && ingested.iter().any(|&i| i > 0) {
            failed_commits.push(format!("{limit} with {smalls} small file(s)"));
        }
        if !clean.contains_key(&ingested) {
            let path = dir.path().join(format!("clean-{}.duckdb", clean.len()));
            let chosen: Vec<PathBuf> = ingested.iter().map(|&i| all_files[i].clone()).collect();
            // Near the smallest workable limit even the small files can run
            // out of memory; nothing ingested must then leave empty tables,
            // as a database that was only created has.
            let out = if chosen.is_empty() {
                Command::new(BIN)
                    .arg("--db")
                    .arg(&path)
                    .arg("init")
                    .output()?
            } else {
                ingest(&path, None, &chosen)?
            };
            assert!(out.status.success(), "clean run of {ingested:?} failed");
            clean.insert(ingested.clone(), tables(&path).await?);
        }
        let stored = tables(&db).await?;
        let expected = &clean[&ingested];
        assert_eq!(
            stored.0.len(),
            expected.0.len(),
            "{limit}, files {ingested:?} ingested: events stored"
        );
        assert!(
            &stored == expected,
            "{limit}, files {ingested:?} ingested: the tables differ from a clean run \
                 of those files"
        );
    }
    // Which limits make the COMMIT itself fail (here, 56.5 MB among
    // others) moves with the machine's load, so this sweep cannot promise
    // to meet one; `after_an_out_of_memory_commit_the_next_ingest_is_exact`
    // makes it happen on purpose.
    println!("COMMIT failed, then a small file was ingested: {failed_commits:?}");
    Ok(())
}

/// The failed COMMIT made to happen, deterministically: an ingest of 60k
/// events is ready to commit when DuckDB's memory limit is lowered (one
/// thread), so that its COMMIT runs out of memory part way. Over limits
/// from 8 MB to 96 MB (those below what the transaction holds are refused
/// by DuckDB and skipped), at least one COMMIT fails; each failure is an
/// `EngineFailed` error, and whatever happened, the next ingest, on the
/// same `Database`, stores exactly its own events, the audit log holds the
/// base events, the new ones and the big ingest's only if it committed, and
/// `verify` finds the current state equal to the log's.
#[tokio::test]
async fn after_an_out_of_memory_commit_the_next_ingest_is_exact() -> TestResult {
    use exposure_store::Error;
    use sea_orm::ConnectionTrait;
    let dir = tempfile::tempdir()?;
    let event = |i: usize, prefix: &str| {
        crate::helpers::input(
            &format!("{prefix}-{i:06}"),
            "2025-01-01T00:00:00Z",
            &format!("office-{}", i % 5),
            &format!("EXP-{}", i % 300),
        )
    };
    let base: Vec<_> = (0..1_000).map(|i| event(i, "base")).collect();
    let big: Vec<_> = (0..60_000).map(|i| event(i, "big")).collect();
    let later: Vec<_> = (0..3).map(|i| event(i, "later")).collect();
    let repo = ExposureRepository::default();
    let mut failed = Vec::new();
    for mb in (8..=96).step_by(2) {
        let path = dir.path().join(format!("oom-{mb}.duckdb"));
        let db = Database::open(&path)?;
        db.init().await?;
        crate::helpers::ingest(&db, 25_000, &base).await?;
        let session = db.begin().await?;
        repo.ingest_events(&session, &big).await?;
        session.execute_unprepared("SET threads = 1").await?;
        let lowered = session
            .execute_unprepared(&format!("SET memory_limit = '{mb}MB'"))
            .await;
        if lowered.is_err() {
            // Below what the transaction already holds: DuckDB refuses.
            db.execute_unprepared("SET threads = 2").await?;
            continue;
        }
        let committed = match session.commit().await {
            Ok(()) => true,
            Err(Error::EngineFailed(message)) => {
                assert!(message.contains("COMMIT"), "{mb} MB: {message}");
                failed.push(mb);
                false
            }
            Err(e) => return Err(format!("{mb} MB: {e}").into()),
        };
        // The limit was lowered for the whole instance: a replaced instance
        // starts from the configured one; one that committed is given back
        // its memory here.
        if committed {
            db.execute_unprepared("SET memory_limit = '4GB'").await?;
            db.execute_unprepared("SET threads = 2").await?;
        }
        let stats = crate::helpers::ingest(&db, 25_000, &later).await?;
        assert_eq!(stats.events_inserted, 3, "{mb} MB");
        let expected = base.len() + later.len() + if committed { big.len() } else { 0 };
        let stored = ExposureEvents::find().count(&db).await?;
        assert_eq!(stored, expected as u64, "{mb} MB, committed: {committed}");
        for e in &later {
            let row = ExposureEvents::find_by_id(e.event_id.clone())
                .one(&db)
                .await?;
            assert_eq!(
                row.map(|r| r.office_id),
                Some(e.office_id.clone()),
                "{mb} MB"
            );
        }
        let report = db.transaction(async |s| repo.verify(s).await).await?;
        assert!(report.is_clean(), "{mb} MB: {report:?}");
    }
    println!("COMMIT failed at {failed:?} MB");
    assert!(
        !failed.is_empty(),
        "no memory limit made the COMMIT fail; the test tested nothing"
    );
    Ok(())
}

/// `ingest-stress.sh`: 20 files of 1,000 events into a fresh database, again
/// and again; with `kill`, each run is first killed (SIGKILL) at a random
/// moment and then run to the end. Every run ends with exit 0, nothing
/// quarantined and 20,000 events stored.
async fn stress(runs: u64, kill: bool) -> TestResult {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("in");
    std::fs::create_dir(&input)?;
    let all = generate_file(&dir.path().join("all.ndjson"), 20_000, 2_000, 42)?;
    let files = split(&all, &input, "part", 1_000)?;
    let db = dir.path().join("s.duckdb");
    let mut rng = fastrand::Rng::with_seed(11);
    let mut failures = Vec::new();
    for run in 0..runs {
        for stale in [db.clone(), PathBuf::from(format!("{}.wal", db.display()))] {
            if stale.exists() {
                std::fs::remove_file(stale)?;
            }
        }
        if kill {
            let mut child = Command::new(BIN)
                .arg("--db")
                .arg(&db)
                .arg("ingest")
                .arg(&input)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            tokio::time::sleep(Duration::from_millis(rng.u64(0..2_000))).await;
            child.kill()?;
            child.wait()?;
        }
        let out = ingest(&db, None, std::slice::from_ref(&input))?;
        let handle = Database::open(&db)?;
        let stored = ExposureEvents::find().count(&handle).await?;
        let quarantined = ExposureRepository::default()
            .quarantined_files(&handle)
            .await?;
        drop(handle);
        if !out.status.success() || stored != 20_000 || !quarantined.is_empty() {
            failures.push(format!(
                "run {run}: exit {:?}, {stored} events stored, quarantined {:?}",
                out.status.code(),
                quarantined
                    .iter()
                    .map(|q| q.error_message.as_str())
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(files.len(), 20);
    Ok(())
}

/// Short by default; `STRESS_RUNS` for the long run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_stress_never_fails() -> TestResult {
    stress(runs("STRESS_RUNS", 25), false).await
}

/// Short by default; `KILL_RUNS` for the long run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_stress_after_sigkill_never_fails() -> TestResult {
    stress(runs("KILL_RUNS", 15), true).await
}

/// A database left with a write-ahead log (as after a crash) is recovered
/// when opened: the log is replayed and checkpointed into the file before
/// anything else happens, and the recovery is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclean_shutdown_is_recovered_before_the_first_write() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db_path = dir.path().join("crashed.duckdb");
    let wal = dir.path().join("crashed.duckdb.wal");
    let file = generate_file(&dir.path().join("scan.ndjson"), 2_000, 300, 3)?;
    {
        let db = Database::open(&db_path)?;
        db.init().await?;
        let conn = db.instance().ok_or("DuckDB")?.connect()?;
        // As if the process died: no checkpoint when the instance closes.
        conn.with_raw(|raw| Ok(raw.execute_batch("PRAGMA disable_checkpoint_on_shutdown")?))
            .await?;
        let out = ingest_in_process(&db, &file).await?;
        assert_eq!(out, 2_000);
    }
    assert!(wal.exists(), "the test needs a write-ahead log left behind");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("--db")
            .arg(&db_path)
            .args(args)
            .env("RUST_LOG", "info")
            .output()
    };

    // A reader replays the log in memory and leaves the files alone.
    let out = run(&["summary", "--json"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("replayed in memory"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(summary["totals"]["events"], 2_000);
    assert!(wal.exists(), "a read-only command wrote the file");

    // A writer checkpoints it into the file before anything else.
    let out = run(&["init"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not closed cleanly") && stderr.contains("recovered"),
        "the recovery is not logged: {stderr}"
    );
    assert!(!wal.exists(), "the write-ahead log was not checkpointed");
    let summary: serde_json::Value = serde_json::from_slice(&run(&["summary", "--json"])?.stdout)?;
    assert_eq!(summary["totals"]["events"], 2_000);
    Ok(())
}

async fn ingest_in_process(db: &Database, file: &Path) -> TestResult<u64> {
    let report = exposure_store::ingest_file(
        db,
        ExposureRepository::default(),
        file,
        exposure_store::Limits::default(),
        None,
    )
    .await?;
    match report.outcome {
        exposure_store::FileOutcome::Ingested { stats } => Ok(stats.events_inserted),
        other => Err(format!("not ingested: {other:?}").into()),
    }
}

/// A failed instance (as after data corruption) is not used again: the
/// next unit of work runs on a fresh instance opened from disk, which holds
/// everything committed before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_instance_is_reopened_from_disk() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db_path = dir.path().join("db.duckdb");
    let first = generate_file(&dir.path().join("a.ndjson"), 500, 100, 1)?;
    let second = generate_file(&dir.path().join("b.ndjson"), 500, 100, 2)?;
    let db = Database::open(&db_path)?;
    db.init().await?;
    assert_eq!(ingest_in_process(&db, &first).await?, 500);
    let instance = db.instance().ok_or("DuckDB")?;
    let before = instance.connect()?;
    instance.fail("simulated engine failure");
    assert!(instance.failure().is_some());
    // While a connection of the failed instance is in use, the file is not
    // opened a second time (two instances of one file lose data)...
    match instance.connect() {
        Err(e) => assert!(e.to_string().contains("still in use"), "{e}"),
        Ok(_) => return Err("a second instance was opened beside a live one".into()),
    }
    // ...and once it is let go, the next call replaces the instance.
    drop(before);
    assert_eq!(ingest_in_process(&db, &second).await?, 500);
    assert!(instance.failure().is_none(), "still the failed instance");
    assert_eq!(ExposureEvents::find().count(&db).await?, 1_000);
    Ok(())
}

/// A file that is not a DuckDB database is refused at once with a clear
/// message: DuckDB never tries to download or load an extension for it.
#[test]
fn a_sqlite_file_is_refused_without_any_download() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sqlite.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.resize(4096, 0);
    std::fs::write(&path, bytes)?;
    let out = Command::new(BIN)
        .arg("--db")
        .arg(&path)
        .arg("summary")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is a SQLite database") && !stderr.contains("xtension"),
        "{stderr}"
    );
    Ok(())
}
