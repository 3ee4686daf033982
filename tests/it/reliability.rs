//! Reliability under faults: SIGKILL mid-ingest, concurrent ingests, a
//! second process, hostile values.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use exposure_store::entity::prelude::*;
use exposure_store::entity::{exposure_current, exposure_event};
use exposure_store::{
    Database, ExposureEvent, ExposureRepository, MAX_ID_BYTES, RawJson, retry_conflicts,
};
use exposure_store::{GenerateOptions, generate};
use exposure_store::{Limits, NdjsonReader};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

use rstest::rstest;

use crate::helpers::{Backend, TestDb, TestResult, input};

const BIN: &str = env!("CARGO_BIN_EXE_exposure-store");

fn read_events(path: &Path) -> TestResult<Vec<ExposureEvent>> {
    read_all(&std::fs::read(path)?)
}

/// Files of generated events: distinct event ids, overlapping exposures.
fn scan_files(dir: &Path, files: u64, events: u64) -> TestResult<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for seed in 0..files {
        let path = dir.join(format!("scan-{seed:03}.ndjson"));
        let options = GenerateOptions {
            events,
            exposures: 300,
            offices: 4,
            seed: 1000 + seed,
        };
        generate(options, std::fs::File::create(&path)?)?;
        paths.push(path);
    }
    Ok(paths)
}

async fn snapshot(
    db: &Database,
) -> TestResult<(Vec<exposure_event::Model>, Vec<exposure_current::Model>)> {
    Ok((
        ExposureEvents::find()
            .order_by_asc(exposure_event::Column::EventId)
            .all(db)
            .await?,
        ExposuresCurrent::find()
            .order_by_asc(exposure_current::Column::OfficeId)
            .order_by_asc(exposure_current::Column::ExposureId)
            .all(db)
            .await?,
    ))
}

/// Kills `exposure-store ingest` with SIGKILL at random moments, many
/// times: every file it reported is fully present, no file is partially
/// present, and finishing the ingest gives the tables of a clean run.
/// `CRASH_ITERATIONS` sets the number of kills (default 12; the long run in
/// the README uses 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_never_leaves_a_partial_file() -> TestResult {
    let iterations: u64 = std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir()?;
    let input_dir = dir.path().join("in");
    std::fs::create_dir(&input_dir)?;
    let files = scan_files(&input_dir, 16, 1_500)?;
    let contents: Vec<Vec<String>> = files
        .iter()
        .map(|f| read_events(f).map(|events| events.into_iter().map(|e| e.event_id).collect()))
        .collect::<TestResult<_>>()?;
    let db_path = dir.path().join("crashed.duckdb");
    let mut rng = fastrand::Rng::with_seed(7);
    let mut killed_mid_run = 0;
    for iteration in 0..iterations {
        let mut child = Command::new(BIN)
            .args([
                "--db",
                db_path.to_str().expect("temporary paths are UTF-8"),
                "ingest",
                "--chunk-size",
                "500",
            ])
            .arg(&input_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        tokio::time::sleep(Duration::from_millis(rng.u64(30..1_500))).await;
        let finished_before_kill = child.try_wait()?.is_some();
        child.kill()?; // SIGKILL
        child.wait()?;
        if !finished_before_kill {
            killed_mid_run += 1;
        }
        let mut stdout = String::new();
        if let Some(mut out) = child.stdout.take() {
            out.read_to_string(&mut stdout)?;
        }
        let reported: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("ingested     "))
            .filter_map(|l| l.split(": ").next())
            .collect();

        let db = Database::open(&db_path)?;
        db.init().await?;
        for (file, ids) in files.iter().zip(&contents) {
            let present = ExposureEvents::find()
                .filter(exposure_event::Column::EventId.is_in(ids.iter().map(String::as_str)))
                .count(&db)
                .await?;
            let name = file.to_str().expect("temporary paths are UTF-8");
            assert!(
                present == 0 || present == ids.len() as u64,
                "iteration {iteration}: {name} is partially present ({present} of {})",
                ids.len()
            );
            if reported.contains(&name) {
                assert_eq!(
                    present,
                    ids.len() as u64,
                    "iteration {iteration}: {name} was reported but is missing"
                );
            }
        }
        drop(db);
    }
    assert!(
        killed_mid_run > 0,
        "no kill landed while the ingest was running"
    );

    // Finishing the job gives what one clean run gives.
    let finish = Command::new(BIN)
        .args([
            "--db",
            db_path.to_str().expect("temporary paths are UTF-8"),
            "ingest",
        ])
        .arg(&input_dir)
        .output()?;
    assert!(
        finish.status.success(),
        "{}",
        String::from_utf8_lossy(&finish.stderr)
    );
    let clean_path = dir.path().join("clean.duckdb");
    let clean = Command::new(BIN)
        .args([
            "--db",
            clean_path.to_str().expect("temporary paths are UTF-8"),
            "ingest",
        ])
        .arg(&input_dir)
        .output()?;
    assert!(clean.status.success());
    let crashed = snapshot(&Database::open(&db_path)?).await?;
    let clean = snapshot(&Database::open(&clean_path)?).await?;
    assert_eq!(crashed.0.len(), 16 * 1_500);
    assert!(
        crashed == clean,
        "the crashed-and-resumed database differs from a clean run"
    );
    Ok(())
}

/// Many tasks ingest overlapping event sets through one handle at once:
/// the result equals a sequential ingest of the same events. (On
/// PostgreSQL they really run at the same time, and a deadlock between two
/// of them is retried.)
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_overlapping_ingests_equal_a_sequential_one(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let mut all = Vec::new();
    generate(
        GenerateOptions {
            events: 3_000,
            exposures: 200,
            offices: 5,
            seed: 3,
        },
        &mut all,
    )?;
    let events = read_all(all.as_slice())?;
    let concurrent = TestDb::new(backend).await?;
    let tasks: Vec<_> = (0..24)
        .map(|task| {
            let db = concurrent.db.clone();
            // Overlapping windows: every event is in several tasks' inputs.
            let slice: Vec<ExposureEvent> =
                events.iter().skip(task * 100).take(800).cloned().collect();
            tokio::spawn(async move {
                let repo = ExposureRepository::with_chunk_size(97);
                retry_conflicts(|| {
                    db.write_transaction(async |s| repo.ingest_events(s, &slice).await)
                })
                .await
            })
        })
        .collect();
    let mut inserted = 0;
    for task in tasks {
        inserted += task.await??.events_inserted;
    }
    assert_eq!(
        inserted, 3_000,
        "each event is inserted by exactly one task"
    );

    let sequential = TestDb::duckdb().await?;
    crate::helpers::ingest(&sequential.db, 97, &events).await?;
    let (a_events, a_current) = snapshot(&concurrent.db).await?;
    let (b_events, b_current) = snapshot(&sequential.db).await?;
    assert_eq!(a_events, b_events);
    // Each exposure's details are fixed or NULL in this data, so the order
    // of the ingests cannot change them: the states must be equal.
    assert_eq!(a_current, b_current);
    Ok(())
}

fn read_all(bytes: &[u8]) -> TestResult<Vec<ExposureEvent>> {
    let mut reader = NdjsonReader::new(bytes, Limits::default());
    let mut out = Vec::new();
    while let Some(e) = reader.next_event().map_err(|r| r.message)? {
        out.push(e);
    }
    Ok(out)
}

/// While one process holds the database, another `exposure-store` fails
/// fast, names the file and the lock, exits 2, and changes nothing.
#[tokio::test]
async fn a_second_process_is_refused_with_a_clear_message() -> TestResult {
    let t = TestDb::duckdb().await?;
    crate::helpers::ingest(
        &t.db,
        10,
        &[input("held", "2025-01-01T00:00:00Z", "o1", "x1")],
    )
    .await?;
    let file = t.dir.path().join("more.ndjson");
    std::fs::write(&file, "")?;
    let started = std::time::Instant::now();
    let out = Command::new(BIN)
        .args([
            "--db",
            t.path.to_str().expect("temporary paths are UTF-8"),
            "ingest",
        ])
        .arg(&file)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(t.path.to_str().expect("temporary paths are UTF-8")),
        "{stderr}"
    );
    assert!(stderr.contains("locked by another process"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the refusal should not wait for the lock"
    );
    // The holder's data is intact and it can go on writing.
    assert_eq!(ExposureEvents::find().count(&t.db).await?, 1);
    crate::helpers::ingest(
        &t.db,
        10,
        &[input("after", "2025-01-02T00:00:00Z", "o1", "x1")],
    )
    .await?;
    assert_eq!(ExposureEvents::find().count(&t.db).await?, 2);
    Ok(())
}

fn nested(depth: usize) -> serde_json::Value {
    (0..depth).fold(
        serde_json::json!("bottom"),
        |inner, i| serde_json::json!({ format!("level{i}"): [inner] }),
    )
}

fn payload(value: &serde_json::Value) -> Option<RawJson> {
    RawJson::from_value(value).ok()
}

/// Quotes, SQL, backslashes, unicode, long strings and deep or large JSON
/// come back exactly, through a file and the CLI, and through queries. A
/// NUL character in a text field, which PostgreSQL cannot store, is refused
/// on both engines with the field named; in the JSON payload (an escape in
/// its text) it is kept.
#[rstest]
#[tokio::test]
async fn hostile_values_round_trip_exactly(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let hostile = [
        "it's \"quoted\"",
        "'; DROP TABLE exposure_events; --",
        r"back\slash \\ \n not a newline",
        "emoji 😀🔥 rtl \u{200f}שלום\u{200e} combining e\u{301}\u{302} zero\u{200b}width",
        "\u{7f} del and \u{1} soh",
    ];
    let long = "x".repeat(1 << 20);
    let mut events = Vec::new();
    for (i, text) in hostile.iter().chain([&long.as_str()]).enumerate() {
        // Identifiers are indexed, so at most MAX_ID_BYTES long (ASCII here).
        let id = &text[..text.len().min(MAX_ID_BYTES - 8)];
        let mut e = input(
            &format!("{id}-{i}"),
            "2025-01-01T00:00:00Z",
            id,
            &format!("{id}#{i}"),
        );
        e.hostname = Some((*text).to_owned());
        e.exposure_class = id.to_owned();
        e.service_version = Some(format!("{text}{text}"));
        e.raw_payload_json = payload(&serde_json::json!({ "text": text, "list": [text, 1, null] }));
        events.push(e);
    }
    let mut deep = input("deep", "2025-01-01T00:00:00Z", "o", "deep");
    // 120 levels: the reader accepts up to 128 (serde_json's recursion limit).
    deep.raw_payload_json = payload(&nested(60));
    events.push(deep);
    let mut large = input("large", "2025-01-01T00:00:00Z", "o", "large");
    large.raw_payload_json = payload(
        &serde_json::json!({ "items": (0..20_000).map(|i| serde_json::json!({"i": i, "s": "é"})).collect::<Vec<_>>() }),
    );
    events.push(large);
    let mut nul_in_json = input("nul-json", "2025-01-01T00:00:00Z", "o", "nul");
    nul_in_json.raw_payload_json = payload(&serde_json::json!({ "nul": ["a\u{0}b"] }));
    events.push(nul_in_json);

    let t = TestDb::new(backend).await?;
    let file = t.dir.path().join("hostile.ndjson");
    let mut ndjson = String::new();
    for e in &events {
        ndjson.push_str(&serde_json::to_string(e)?);
        ndjson.push('\n');
    }
    std::fs::write(&file, ndjson)?;
    let mut nul_in_text = input("nul-text", "2025-01-01T00:00:00Z", "o", "nul");
    nul_in_text.hostname = Some("host\u{0}name".to_owned());
    let long_id = input("long-id", "2025-01-01T00:00:00Z", &long, "x");
    let rejected = [
        ("nul-text.ndjson", nul_in_text),
        ("long-id.ndjson", long_id),
    ]
    .into_iter()
    .map(|(name, e)| {
        let path = t.dir.path().join(name);
        std::fs::write(&path, serde_json::to_string(&e)?)?;
        Ok(path)
    })
    .collect::<TestResult<Vec<_>>>()?;
    // The CLI is another process: on DuckDB this one lets go of the file.
    let args = t.cli_args();
    drop(t.db);
    let out = Command::new(BIN)
        .args(args)
        .args(["ingest", "--json"])
        .arg(&file)
        .args(&rejected)
        .output()?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["files_ingested"], 1, "{report}");
    assert_eq!(
        report["files"][1]["rejection"]["details"]["field"],
        "hostname"
    );
    assert_eq!(
        report["files"][2]["rejection"]["details"]["field"],
        "office_id"
    );

    let db = crate::helpers::reopen(&t.path, t.url.as_deref()).await?;
    let stored: BTreeMap<String, exposure_event::Model> = ExposureEvents::find()
        .all(&db)
        .await?
        .into_iter()
        .map(|e| (e.event_id.clone(), e))
        .collect();
    assert_eq!(stored.len(), events.len());
    for e in &events {
        let s = stored.get(&e.event_id).ok_or(format!(
            "{:?} missing",
            e.event_id.chars().take(40).collect::<String>()
        ))?;
        assert_eq!(&s.office_id, &e.office_id);
        assert_eq!(&s.exposure_class, &e.exposure_class);
        assert_eq!(&s.hostname, &e.hostname);
        assert_eq!(&s.service_version, &e.service_version);
        assert_eq!(
            s.raw_payload_json.as_deref(),
            e.raw_payload_json.as_ref().map(RawJson::as_str)
        );
        // Filtering by the hostile value finds exactly its row.
        let found = ExposuresCurrent::find()
            .filter(exposure_current::Column::OfficeId.eq(e.office_id.as_str()))
            .filter(exposure_current::Column::ExposureId.eq(e.exposure_id.as_str()))
            .all(&db)
            .await?;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].hostname, e.hostname);
    }
    assert_eq!(
        ExposureEvents::find().count(&db).await?,
        events.len() as u64,
        "the tables are all still there"
    );
    Ok(())
}

/// Through a file and the CLI: every score comes back as the double its
/// text names (5,000 random 17-digit scores, and one serde_json's fast
/// path read one ulp low), in the log, in the current state and in
/// `exposures --json`; every payload comes back as the text that was sent
/// (digits beyond 64 bits and beyond a double, key order, spacing).
#[rstest]
#[tokio::test]
async fn numbers_and_payloads_come_back_exactly(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let mut rng = fastrand::Rng::with_seed(17);
    let mut scores: Vec<String> = (0..5_000)
        .map(|_| format!("{:.16e}", rng.f64() * 10.0))
        .collect();
    scores.push("0.20293084081576074".to_owned());
    let payloads = [
        r#"{"zkey":1, "big":123456789012345678901234567890,"below_i64":-9223372036854775809}"#,
        r#"{"huge":1e400,"tiny":1e-400,"score":0.20293084081576074}"#,
        r#"[ 1.0, -0.0, 1E+2, "\u00e9\ud83d\ude00" ]"#,
    ];
    let mut ndjson = String::new();
    for (i, score) in scores.iter().enumerate() {
        let payload = payloads[i % payloads.len()];
        ndjson.push_str(&format!(
            r#"{{"event_id":"n-{i}","timestamp":"2025-01-01T00:00:00Z","office_id":"o","asset_id":"a","exposure_id":"x-{i}","exposure_class":"c","event_action":"opened","status":"open","severity":"low","risk_score":{score},"raw_payload_json":{payload}}}"#
        ));
        ndjson.push('\n');
    }
    let file = t.dir.path().join("numbers.ndjson");
    std::fs::write(&file, ndjson)?;
    let args = t.cli_args();
    drop(t.db);
    let out = Command::new(BIN)
        .args(&args)
        .args(["ingest", "--json"])
        .arg(&file)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let db = crate::helpers::reopen(&t.path, t.url.as_deref()).await?;
    let stored = ExposureEvents::find().all(&db).await?;
    let current = ExposuresCurrent::find().all(&db).await?;
    assert_eq!((stored.len(), current.len()), (scores.len(), scores.len()));
    let index = |id: &str| id.rsplit('-').next().and_then(|i| i.parse::<usize>().ok());
    for e in &stored {
        let i = index(&e.event_id).ok_or("bad id")?;
        let sent: f64 = scores[i].parse()?;
        assert_eq!(e.risk_score.to_bits(), sent.to_bits(), "{}", scores[i]);
        assert_eq!(
            e.raw_payload_json.as_deref(),
            Some(payloads[i % payloads.len()])
        );
    }
    for c in &current {
        let sent: f64 = scores[index(&c.exposure_id).ok_or("bad id")?].parse()?;
        assert_eq!(c.risk_score.to_bits(), sent.to_bits());
    }
    drop(db);
    let listed = Command::new(BIN)
        .args(&args)
        .args(["exposures", "--json", "--limit", "10000"])
        .output()?;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout)?;
    assert_eq!(rows.len(), scores.len());
    for row in &rows {
        let i = row["exposure_id"]
            .as_str()
            .and_then(index)
            .ok_or("bad row")?;
        let shown = row["risk_score"].as_f64().ok_or("no score")?;
        assert_eq!(shown.to_bits(), scores[i].parse::<f64>()?.to_bits());
    }
    Ok(())
}
