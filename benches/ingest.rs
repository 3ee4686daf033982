//! `cargo bench --bench ingest`: ingest throughput against DuckDB's own
//! append floor, growth, memory and dashboard latency, in ONE run on one
//! generated data set.
//!
//! 1. the full CLI path: `exposure-store ingest` of an NDJSON file (parse,
//!    validate, stage, upsert, commit), as its own process;
//! 2. the raw floor: the same file parsed and appended with DuckDB's Appender
//!    straight into `exposure_events` (same schema and indexes, one
//!    transaction, no upsert), as its own process;
//! 3. growth: a second file of the same shape ingested into the database of
//!    (1), which already holds its events;
//! 4. dashboard reads on the result: `summary` and a filtered `exposures`
//!    query, median of repeated runs;
//! 5. on PostgreSQL, when a server is given: (1) and (3) into a new
//!    database, then four processes at once on a third file split by office
//!    (disjoint keys) and on a fourth split by line (every key in all four
//!    parts), and the dashboard reads.
//!
//! Settings (environment): `BENCH_EVENTS` (1,000,000), `BENCH_EXPOSURES`
//! (100,000), `BENCH_OFFICES` (20), `BENCH_MEMORY_LIMIT` (DuckDB memory limit
//! for (1)-(3); default: DuckDB's own, 80% of RAM),
//! `BENCH_CHUNK_SIZE` (the CLI default), `BENCH_DATABASE_URL` or
//! `TEST_DATABASE_URL` (a PostgreSQL server on which the benchmark creates
//! its own database; `scripts/with-postgres cargo bench --bench ingest`
//! provides one). Numbers depend on the machine; compare the ratios.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use exposure_store::generate::{GenerateOptions, generate};
use exposure_store::ingest::{Limits, NdjsonReader};
use exposure_store::repository::{ExposureFilter, Page};
use exposure_store::{Database, ExposureRepository, config};

const BIN: &str = env!("CARGO_BIN_EXE_exposure-store");
/// Events appended per flush in the floor (the Appender buffers anyway).
const FLOOR_BATCH: usize = 50_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where an ingest goes.
enum Target {
    DuckDb(PathBuf),
    Postgres(String),
}

impl Target {
    fn args(&self) -> Vec<String> {
        match self {
            Self::DuckDb(path) => vec!["--db".to_owned(), path.display().to_string()],
            Self::Postgres(url) => vec!["--database-url".to_owned(), url.clone()],
        }
    }

    async fn open(&self) -> Result<Database> {
        Ok(match self {
            Self::DuckDb(path) => Database::open(path)?,
            Self::Postgres(url) => Database::connect(url).await?,
        })
    }

    async fn size(&self) -> Result<u64> {
        match self {
            Self::DuckDb(path) => Ok(duckdb_size(path)),
            Self::Postgres(url) => {
                use sea_orm::ConnectionTrait;
                let db = Database::connect(url).await?;
                let row = db
                    .query_one_raw(sea_orm::Statement::from_string(
                        sea_orm::DbBackend::Postgres,
                        "SELECT pg_database_size(current_database()) AS bytes",
                    ))
                    .await?
                    .context("no size")?;
                Ok(u64::try_from(row.try_get::<i64>("", "bytes")?)?)
            }
        }
    }
}

/// A DuckDB database's bytes on disk: its file and write-ahead log.
fn duckdb_size(path: &Path) -> u64 {
    let wal = path.with_extension("duckdb.wal");
    std::fs::metadata(path).map_or(0, |m| m.len()) + std::fs::metadata(wal).map_or(0, |m| m.len())
}

struct Measured {
    name: &'static str,
    events: u64,
    seconds: f64,
    peak_rss: Option<u64>,
    db_bytes: u64,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--floor") {
        let get = |k: usize| args.get(i + k).map(String::as_str).unwrap_or_default();
        return floor(Path::new(get(1)), Path::new(get(2)), get(3));
    }
    let options = GenerateOptions {
        events: env_or("BENCH_EVENTS", 1_000_000),
        exposures: env_or("BENCH_EXPOSURES", 100_000),
        offices: env_or("BENCH_OFFICES", 20),
        seed: 1,
    };
    let memory_limit = std::env::var("BENCH_MEMORY_LIMIT").unwrap_or_default();
    let chunk_size: usize = env_or(
        "BENCH_CHUNK_SIZE",
        exposure_store::repository::DEFAULT_CHUNK_SIZE,
    );
    let dir = tempfile::tempdir()?;
    let first = dir.path().join("first.ndjson");
    let second = dir.path().join("second.ndjson");
    generate(options, std::fs::File::create(&first)?)?;
    generate(
        GenerateOptions { seed: 2, ..options },
        std::fs::File::create(&second)?,
    )?;
    println!(
        "data: {} events, {} exposures, {} offices ({} MiB of NDJSON); memory limit {}; chunk size {chunk_size}",
        options.events,
        options.exposures,
        options.offices,
        std::fs::metadata(&first)?.len() / (1 << 20),
        if memory_limit.is_empty() {
            "DuckDB default"
        } else {
            &memory_limit
        },
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let full = Target::DuckDb(dir.path().join("full.duckdb"));
    let floor_db = dir.path().join("floor.duckdb");
    let ingest = |name, target: &Target, file: &Path| {
        cli_ingest(
            &runtime,
            name,
            target,
            &[file.to_path_buf()],
            &memory_limit,
            chunk_size,
            options.events,
        )
    };
    let cli = ingest("(1) CLI ingest, new database", &full, &first)?;
    let raw = floor_run(&floor_db, &first, &memory_limit, options.events)?;
    let grown = ingest("(3) CLI ingest, database holds 1st file", &full, &second)?;
    print_table(&[&cli, &raw, &grown]);
    println!();
    print_ratio("(1)/(2), CLI vs raw Appender floor", &cli, &raw);
    print_ratio("(3)/(1), ingest into a grown database", &grown, &cli);
    runtime.block_on(dashboard(&full))?;

    let server = std::env::var("BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("TEST_DATABASE_URL"))
        .ok()
        .filter(|u| !u.is_empty());
    let Some(server) = server else {
        println!();
        println!(
            "(5) PostgreSQL: skipped (set BENCH_DATABASE_URL, or run under scripts/with-postgres)"
        );
        return Ok(());
    };
    let pg = Target::Postgres(runtime.block_on(create_database(&server))?);
    println!();
    println!(
        "(5) PostgreSQL ({}), same files:",
        server_version(&runtime, &pg)?
    );
    let pg_new = ingest("(5a) CLI ingest, new database", &pg, &first)?;
    let pg_grown = ingest("(5b) CLI ingest, database holds 1st file", &pg, &second)?;
    // One writer against four on files of the same shape: split by office
    // (disjoint keys) and split by line (every key in all four parts).
    let next_file = |seed: u64| -> Result<PathBuf> {
        let path = dir.path().join(format!("file{seed}.ndjson"));
        generate(
            GenerateOptions { seed, ..options },
            std::fs::File::create(&path)?,
        )?;
        Ok(path)
    };
    let by_office = split_by_office(&next_file(3)?, 4)?;
    let pg_disjoint = cli_ingest(
        &runtime,
        "(5c) 4 processes at once, a 3rd file split by office (disjoint keys)",
        &pg,
        &by_office,
        &memory_limit,
        chunk_size,
        options.events,
    )?;
    let by_line = split(&next_file(4)?, 4)?;
    let pg_overlapping = cli_ingest(
        &runtime,
        "(5d) 4 processes at once, a 4th file split by line (shared keys)",
        &pg,
        &by_line,
        &memory_limit,
        chunk_size,
        options.events,
    )?;
    print_table(&[&pg_new, &pg_grown, &pg_disjoint, &pg_overlapping]);
    println!();
    print_ratio(
        "(5a)/(1), PostgreSQL vs DuckDB, new database",
        &pg_new,
        &cli,
    );
    print_ratio(
        "(5b)/(5a), PostgreSQL, ingest into a grown database",
        &pg_grown,
        &pg_new,
    );
    print_ratio(
        "(5c)/(5b), 4 concurrent writers vs 1, disjoint offices",
        &pg_disjoint,
        &pg_grown,
    );
    print_ratio(
        "(5d)/(5b), 4 concurrent writers vs 1, shared keys",
        &pg_overlapping,
        &pg_grown,
    );
    runtime.block_on(dashboard(&pg))?;
    Ok(())
}

fn print_ratio(label: &str, a: &Measured, b: &Measured) {
    let rate = |m: &Measured| m.events as f64 / m.seconds;
    println!("ratio {label}: {:.2}", rate(a) / rate(b));
}

fn print_table(rows: &[&Measured]) {
    println!();
    println!("| path | events/s | peak RSS | database size |");
    println!("|---|---|---|---|");
    for m in rows {
        println!(
            "| {} | {:.0} | {} | {} MiB |",
            m.name,
            m.events as f64 / m.seconds,
            m.peak_rss.map_or("n/a".to_owned(), |b| format!(
                "{:.0} MiB",
                b as f64 / f64::from(1 << 20)
            )),
            m.db_bytes / (1 << 20),
        );
    }
}

/// A new database on the server at `server`; its URL.
async fn create_database(server: &str) -> Result<String> {
    use sea_orm::ConnectionTrait;
    let name = format!("bench_{}", std::process::id());
    let admin = Database::connect(server).await?;
    // An identifier made here (CREATE DATABASE takes no bound values).
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let base = server.rsplit_once('/').map_or(server, |(base, _)| base);
    Ok(format!("{base}/{name}"))
}

fn server_version(runtime: &tokio::runtime::Runtime, target: &Target) -> Result<String> {
    use sea_orm::ConnectionTrait;
    runtime.block_on(async {
        let row = target
            .open()
            .await?
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT current_setting('server_version') || ', fsync ' || current_setting('fsync') AS v",
            ))
            .await?
            .context("no version")?;
        Ok(format!("PostgreSQL {}", row.try_get::<String>("", "v")?))
    })
}

/// Splits `file` into `n` files of consecutive lines.
fn split(file: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(file)?;
    let lines: Vec<&str> = text.lines().collect();
    let per_part = lines.len().div_ceil(n);
    write_parts(file, "part", lines.chunks(per_part.max(1)))
}

/// Writes each part's lines to `<file stem>.<name><i>.ndjson`; their paths.
fn write_parts<'a>(
    file: &Path,
    name: &str,
    parts: impl IntoIterator<Item = &'a [&'a str]>,
) -> Result<Vec<PathBuf>> {
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let path = file.with_extension(format!("{name}{i}.ndjson"));
            std::fs::write(&path, part.join("\n"))?;
            Ok(path)
        })
        .collect()
}

/// Splits `file` into `n` files by office: every office's lines go to one
/// file (office `k` of the sorted list to file `k % n`).
fn split_by_office(file: &Path, n: usize) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Office<'a> {
        office_id: &'a str,
    }
    let text = std::fs::read_to_string(file)?;
    let mut offices = std::collections::BTreeMap::<&str, Vec<&str>>::new();
    for line in text.lines() {
        let office: Office<'_> = serde_json::from_str(line)?;
        offices.entry(office.office_id).or_default().push(line);
    }
    let mut parts = vec![Vec::new(); n.max(1)];
    for (k, lines) in offices.into_values().enumerate() {
        let slot = k % parts.len();
        parts[slot].extend(lines);
    }
    write_parts(file, "office", parts.iter().map(Vec::as_slice))
}

/// Runs `exposure-store ingest --json` on `file` into `target`.
fn spawn_ingest(
    target: &Target,
    file: &Path,
    memory_limit: &str,
    chunk_size: usize,
) -> Result<Child> {
    Ok(Command::new(BIN)
        .args(target.args())
        .args([
            "--memory-limit",
            memory_limit,
            "ingest",
            "--json",
            "--chunk-size",
            &chunk_size.to_string(),
        ])
        .arg(file)
        .env_remove("DUCKDB_MEMORY_LIMIT")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// Waits for an ingest; returns its new events and peak RSS.
fn finish_ingest(name: &str, child: Child) -> Result<(u64, Option<u64>)> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{name} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((
        summary["totals"]["events_inserted"].as_u64().unwrap_or(0),
        summary["peak_rss_bytes"].as_u64(),
    ))
}

/// Ingests `files` into `target`, one `exposure-store ingest` process per
/// file, all at once; measures the wall time until the last one ends.
fn cli_ingest(
    runtime: &tokio::runtime::Runtime,
    name: &'static str,
    target: &Target,
    files: &[PathBuf],
    memory_limit: &str,
    chunk_size: usize,
    events: u64,
) -> Result<Measured> {
    let start = Instant::now();
    let children = files
        .iter()
        .map(|f| spawn_ingest(target, f, memory_limit, chunk_size))
        .collect::<Result<Vec<_>>>()?;
    let (mut inserted, mut peak_rss) = (0, None);
    for child in children {
        let (n, rss) = finish_ingest(name, child)?;
        inserted += n;
        peak_rss = peak_rss.max(rss);
    }
    let seconds = start.elapsed().as_secs_f64();
    if inserted != events {
        bail!("{name}: expected {events} new events, the CLI inserted {inserted}");
    }
    Ok(Measured {
        name,
        events,
        seconds,
        peak_rss,
        db_bytes: runtime.block_on(target.size())?,
    })
}

fn floor_run(db: &Path, file: &Path, memory_limit: &str, events: u64) -> Result<Measured> {
    let start = Instant::now();
    let out = Command::new(std::env::current_exe()?)
        .arg("--floor")
        .arg(db)
        .arg(file)
        .arg(memory_limit)
        .output()?;
    let seconds = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("floor failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let peak_rss = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    Ok(Measured {
        name: "(2) raw Appender floor, no upsert",
        events,
        seconds,
        peak_rss,
        db_bytes: duckdb_size(db),
    })
}

/// The floor, in its own process: migrate, then parse and append every event
/// in one transaction; prints the process's peak RSS in bytes.
fn floor(db: &Path, file: &Path, memory_limit: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let limit = (!memory_limit.is_empty()).then_some(memory_limit);
        let database = Database::open_with(db, &config::duckdb_options(limit))?;
        database.init().await?;
        let conn = database
            .instance()
            .context("the floor runs on DuckDB")?
            .connect()?;
        let file = std::fs::File::open(file)?;
        conn.with_raw(move |raw| {
            let append = || -> Result<(), String> {
                raw.execute_batch("BEGIN TRANSACTION")
                    .map_err(|e| e.to_string())?;
                let mut appender = raw.appender("exposure_events").map_err(|e| e.to_string())?;
                let mut reader =
                    NdjsonReader::new(std::io::BufReader::new(file), Limits::default());
                let mut pending = 0;
                while let Some(event) = reader.next_event().map_err(|r| r.message)? {
                    let row = exposure_store::repository::event_row(&event)
                        .into_iter()
                        .map(exposure_store::duckdb_adapter::into_duckdb)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| e.to_string())?;
                    appender
                        .append_row(duckdb::appender_params_from_iter(row))
                        .map_err(|e| e.to_string())?;
                    pending += 1;
                    if pending == FLOOR_BATCH {
                        appender.flush().map_err(|e| e.to_string())?;
                        pending = 0;
                    }
                }
                appender.flush().map_err(|e| e.to_string())?;
                drop(appender);
                raw.execute_batch("COMMIT").map_err(|e| e.to_string())
            };
            append().map_err(exposure_store::duckdb_adapter::AdapterError::Open)
        })
        .await?;
        anyhow::Ok(())
    })?;
    println!("{}", exposure_store::cli::peak_rss_bytes().unwrap_or(0));
    Ok(())
}

/// (4) Median latency of the dashboard reads on the grown database.
async fn dashboard(target: &Target) -> Result<()> {
    const RUNS: usize = 30;
    let db = target.open().await.context("open the benchmark database")?;
    let repo = ExposureRepository::default();
    let rows = repo.totals(&db).await?.exposures;
    let mut summary = Vec::with_capacity(RUNS);
    let mut filtered = Vec::with_capacity(RUNS);
    let filter = ExposureFilter {
        office_id: Some("office-007".to_owned()),
        status: Some(exposure_store::entity::Status::Open),
        ..ExposureFilter::default()
    };
    for _ in 0..RUNS {
        let start = Instant::now();
        repo.exposure_counts(&db).await?;
        repo.totals(&db).await?;
        summary.push(start.elapsed());
        let start = Instant::now();
        repo.current_exposures(
            &db,
            &filter,
            Page {
                offset: 0,
                limit: 50,
            },
        )
        .await?;
        filtered.push(start.elapsed());
    }
    println!();
    println!("dashboard reads on {rows} current exposures, median of {RUNS} runs:");
    println!(
        "    summary (counts by office, severity, status + table totals): {:.1} ms",
        median_ms(&mut summary)
    );
    println!(
        "    exposures --office office-007 --status open --limit 50:      {:.1} ms",
        median_ms(&mut filtered)
    );
    Ok(())
}

fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples
        .get(samples.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
