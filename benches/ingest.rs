//! `cargo bench --bench ingest`: ingest throughput, growth with the size
//! of the database, memory, a plain DuckDB SQL pipeline for comparison and
//! dashboard latency, in ONE run on one generated data set.
//!
//! 1. the full CLI path: `exposure-store ingest` of an NDJSON file (parse,
//!    validate, append, upsert, commit), as its own process, into a new
//!    database;
//! 2. plain DuckDB SQL on the same file, as its own process: a database
//!    with the same schema (`exposure-store init`), then in one transaction
//!    `read_ndjson` with explicit columns into a temporary table, the events
//!    whose id is not stored appended with one `INSERT ... SELECT`, and one
//!    set-based `INSERT ... ON CONFLICT DO UPDATE` of their state into
//!    `exposures_current` with the same rules; its tables are then compared
//!    with (1)'s, row for row;
//! 3. growth: files 2, 3, ... of the same shape (same exposures, new events:
//!    repeated scans), each ingested by its own process into (1)'s
//!    database; one table row per file;
//! 4. a 1,000-event file into the grown database and into a new one;
//! 5. dashboard reads on the grown database: `summary` and a filtered
//!    `exposures` query, median of repeated runs;
//! 6. on PostgreSQL, when a server is given: the 1st and 2nd files into a
//!    new database, then four processes at once on a file split by office
//!    (disjoint keys) and on one split by line (every key in all four
//!    parts), and the dashboard reads.
//!
//! Settings (environment): `BENCH_EVENTS` (1,000,000 per file),
//! `BENCH_EXPOSURES` (100,000), `BENCH_OFFICES` (20), `BENCH_FILES` (files
//! ingested in (3), counting the first: 3; the full run is 10),
//! `BENCH_MEMORY_LIMIT` (DuckDB memory limit; default: DuckDB's own, 80% of
//! RAM), `BENCH_CHUNK_SIZE` (the CLI default), `BENCH_DATABASE_URL` or
//! `TEST_DATABASE_URL` (a PostgreSQL server on which the benchmark creates
//! its own database; `scripts/with-postgres cargo bench --bench ingest`
//! provides one). Numbers depend on the machine; compare the ratios.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use exposure_store::{Database, ExposureRepository};
use exposure_store::{ExposureFilter, Page};
use exposure_store::{GenerateOptions, generate};

const BIN: &str = env!("CARGO_BIN_EXE_exposure-store");

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
    name: String,
    events: u64,
    seconds: f64,
    peak_rss: Option<u64>,
    db_bytes: u64,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--plain-sql") {
        let get = |k: usize| args.get(i + k).map(String::as_str).unwrap_or_default();
        return plain_sql(Path::new(get(1)), Path::new(get(2)), get(3));
    }
    let options = GenerateOptions {
        events: env_or("BENCH_EVENTS", 1_000_000),
        exposures: env_or("BENCH_EXPOSURES", 100_000),
        offices: env_or("BENCH_OFFICES", 20),
        seed: 1,
    };
    let memory_limit = std::env::var("BENCH_MEMORY_LIMIT").unwrap_or_default();
    let chunk_size: usize = env_or("BENCH_CHUNK_SIZE", exposure_store::DEFAULT_CHUNK_SIZE);
    let files: u64 = env_or("BENCH_FILES", 3).max(2);
    let dir = tempfile::tempdir()?;
    // The n-th file of the run (seed n): same exposures, new events.
    let file = |seed: u64| -> Result<PathBuf> {
        let path = dir.path().join(format!("file{seed}.ndjson"));
        if !path.exists() {
            generate(
                GenerateOptions { seed, ..options },
                std::fs::File::create(&path)?,
            )?;
        }
        Ok(path)
    };
    let first = file(1)?;
    let second = file(2)?;
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
    let plain_db = dir.path().join("plain.duckdb");
    let ingest = |name: String, target: &Target, file: &Path, events: u64| {
        cli_ingest(
            &runtime,
            name,
            target,
            &[file.to_path_buf()],
            &memory_limit,
            chunk_size,
            events,
        )
    };
    let cli = ingest(
        "(1) CLI ingest, new database".into(),
        &full,
        &first,
        options.events,
    )?;
    let plain = plain_sql_run(&plain_db, &first, &memory_limit, options.events)?;
    let differing = tables_differ(full_path(&full)?, &plain_db)?;
    print_table(&[&cli, &plain]);
    println!();
    print_ratio("(1)/(2), CLI vs plain DuckDB SQL", &cli, &plain);
    println!(
        "(1) and (2) store {}",
        if differing.is_empty() {
            "the same tables, row for row".to_owned()
        } else {
            format!("different rows: {}", differing.join(", "))
        }
    );
    if !differing.is_empty() {
        bail!("the plain SQL pipeline and the CLI disagree");
    }

    println!();
    println!("(3) growth: file n into the database holding files 1..n-1 ({files} files)");
    let mut grown = vec![cli];
    for n in 2..=files {
        let path = file(n)?;
        let stored = (n - 1) * options.events;
        grown.push(ingest(
            format!("file {n} (database holds {stored} events)"),
            &full,
            &path,
            options.events,
        )?);
        if n > 2 {
            std::fs::remove_file(&path)?;
        }
    }
    print_growth(&grown);

    let small_options = GenerateOptions {
        events: 1_000,
        seed: 1_000_001,
        ..options
    };
    let small = dir.path().join("small.ndjson");
    generate(small_options, std::fs::File::create(&small)?)?;
    let small_new = ingest(
        "(4a) 1,000 events, new database".into(),
        &Target::DuckDb(dir.path().join("small.duckdb")),
        &small,
        1_000,
    )?;
    let small_grown = ingest(
        format!(
            "(4b) 1,000 events, database holds {} events",
            files * options.events
        ),
        &full,
        &small,
        1_000,
    )?;
    print_table(&[&small_new, &small_grown]);
    println!();
    println!(
        "ratio (4b)/(4a), time: {:.2}, peak RSS: {}",
        small_grown.seconds / small_new.seconds,
        match (small_grown.peak_rss, small_new.peak_rss) {
            (Some(a), Some(b)) => format!("{:.2}", a as f64 / b as f64),
            _ => "n/a".to_owned(),
        }
    );
    runtime.block_on(dashboard(&full))?;

    let server = std::env::var("BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("TEST_DATABASE_URL"))
        .ok()
        .filter(|u| !u.is_empty());
    let Some(server) = server else {
        println!();
        println!(
            "(6) PostgreSQL: skipped (set BENCH_DATABASE_URL, or run under scripts/with-postgres)"
        );
        return Ok(());
    };
    let pg = Target::Postgres(runtime.block_on(create_database(&server))?);
    println!();
    println!(
        "(6) PostgreSQL ({}), files of the same shape:",
        server_version(&runtime, &pg)?
    );
    let pg_new = ingest(
        "(6a) CLI ingest, new database".into(),
        &pg,
        &first,
        options.events,
    )?;
    let pg_grown = ingest(
        "(6b) CLI ingest, database holds 1st file".into(),
        &pg,
        &second,
        options.events,
    )?;
    // One writer against four on files of the same shape: split by office
    // (disjoint keys) and split by line (every key in all four parts).
    let by_office = split_by_office(&file(files + 1)?, 4)?;
    let pg_disjoint = cli_ingest(
        &runtime,
        "(6c) 4 processes at once, a file split by office (disjoint keys)".into(),
        &pg,
        &by_office,
        &memory_limit,
        chunk_size,
        options.events,
    )?;
    let by_line = split(&file(files + 2)?, 4)?;
    let pg_overlapping = cli_ingest(
        &runtime,
        "(6d) 4 processes at once, a file split by line (shared keys)".into(),
        &pg,
        &by_line,
        &memory_limit,
        chunk_size,
        options.events,
    )?;
    print_table(&[&pg_new, &pg_grown, &pg_disjoint, &pg_overlapping]);
    println!();
    if let Some(cli) = grown.first() {
        print_ratio("(6a)/(1), PostgreSQL vs DuckDB, new database", &pg_new, cli);
    }
    print_ratio(
        "(6b)/(6a), PostgreSQL, ingest into a grown database",
        &pg_grown,
        &pg_new,
    );
    print_ratio(
        "(6c)/(6b), 4 concurrent writers vs 1, disjoint offices",
        &pg_disjoint,
        &pg_grown,
    );
    print_ratio(
        "(6d)/(6b), 4 concurrent writers vs 1, shared keys",
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
        println!("| {} |", cells(m));
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
    name: String,
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
        let (n, rss) = finish_ingest(&name, child)?;
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

/// Runs (2), the plain DuckDB SQL pipeline, on `file` into a new database
/// at `db` made by `exposure-store init`, in its own process.
fn plain_sql_run(db: &Path, file: &Path, memory_limit: &str, events: u64) -> Result<Measured> {
    let init = Command::new(BIN)
        .arg("--db")
        .arg(db)
        .arg("init")
        .env_remove("DATABASE_URL")
        .output()?;
    if !init.status.success() {
        bail!("init failed: {}", String::from_utf8_lossy(&init.stderr));
    }
    let start = Instant::now();
    let out = Command::new(std::env::current_exe()?)
        .arg("--plain-sql")
        .arg(db)
        .arg(file)
        .arg(memory_limit)
        .output()?;
    let seconds = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("plain SQL failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let peak_rss = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    Ok(Measured {
        name: "(2) plain DuckDB SQL, new database".into(),
        events,
        seconds,
        peak_rss,
        db_bytes: duckdb_size(db),
    })
}

/// The columns of `exposure_events` with the types `read_ndjson` reads.
const EVENT_COLUMNS: [(&str, &str); 20] = [
    ("event_id", "VARCHAR"),
    ("timestamp", "TIMESTAMPTZ"),
    ("office_id", "VARCHAR"),
    ("asset_id", "VARCHAR"),
    ("exposure_id", "VARCHAR"),
    ("exposure_class", "VARCHAR"),
    ("event_action", "VARCHAR"),
    ("status", "VARCHAR"),
    ("severity", "VARCHAR"),
    ("risk_score", "DOUBLE"),
    ("hostname", "VARCHAR"),
    ("asset_ip", "VARCHAR"),
    ("dst_ip", "VARCHAR"),
    ("dst_port", "INTEGER"),
    ("protocol", "VARCHAR"),
    ("service_name", "VARCHAR"),
    ("service_product", "VARCHAR"),
    ("service_version", "VARCHAR"),
    ("scan_run_id", "VARCHAR"),
    ("raw_payload_json", "JSON"),
];

/// Taken from the greatest event by `(timestamp, event_id)`.
const LATEST: [&str; 6] = [
    "exposure_class",
    "asset_id",
    "status",
    "severity",
    "event_action",
    "risk_score",
];

/// Each from the greatest event in which it is not NULL, with provenance.
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

/// The plain pipeline's statements after the load of the file into
/// `incoming`: keep each id's first line whose id is not stored, append
/// those, and merge their state into `exposures_current` (the rules of
/// the README's *How the current state is kept*).
fn plain_sql_script() -> String {
    let events: Vec<String> = EVENT_COLUMNS
        .iter()
        .map(|(c, _)| format!("\"{c}\""))
        .collect();
    let events = events.join(", ");
    let mut state = vec![
        "office_id".to_owned(),
        "exposure_id".to_owned(),
        "MIN(\"timestamp\") AS first_seen".to_owned(),
        "MAX(\"timestamp\") AS last_seen".to_owned(),
        "arg_max(event_id, r) AS last_event_id".to_owned(),
    ];
    let mut merge = vec![
        "first_seen = LEAST(c.first_seen, excluded.first_seen)".to_owned(),
        "last_seen = GREATEST(c.last_seen, excluded.last_seen)".to_owned(),
    ];
    let newer = "(excluded.last_seen > c.last_seen OR (excluded.last_seen = c.last_seen \
                 AND excluded.last_event_id > c.last_event_id))";
    for column in LATEST.iter().chain(&["last_event_id"]) {
        if *column != "last_event_id" {
            state.push(format!("arg_max({column}, r) AS {column}"));
        }
        merge.push(format!(
            "{column} = CASE WHEN {newer} THEN excluded.{column} ELSE c.{column} END"
        ));
    }
    for d in DETAILS {
        state.push(format!("arg_max({d}, r) AS {d}"));
        state.push(format!(
            "arg_max(CASE WHEN {d} IS NOT NULL THEN \"timestamp\" END, r) AS {d}_seen_at"
        ));
        state.push(format!(
            "arg_max(CASE WHEN {d} IS NOT NULL THEN event_id END, r) AS {d}_event_id"
        ));
        let newer = format!(
            "(excluded.{d}_seen_at > c.{d}_seen_at OR (excluded.{d}_seen_at = c.{d}_seen_at \
             AND excluded.{d}_event_id > c.{d}_event_id) OR c.{d}_seen_at IS NULL)"
        );
        for column in [
            d.to_owned(),
            format!("{d}_seen_at"),
            format!("{d}_event_id"),
        ] {
            merge.push(format!(
                "{column} = CASE WHEN {newer} THEN excluded.{column} ELSE c.{column} END"
            ));
        }
    }
    let names: Vec<&str> = state
        .iter()
        .map(|s| s.rsplit(' ').next().unwrap_or(s))
        .collect();
    format!(
        "CREATE TEMP TABLE new_events AS \
           SELECT * EXCLUDE (line) FROM ( \
             SELECT *, (md5_number(event_id) >> 64)::UBIGINT AS event_key, \
                    row_number() OVER () AS line FROM incoming) AS i \
           WHERE NOT EXISTS (SELECT 1 FROM exposure_events AS e \
                             WHERE e.event_key = i.event_key AND e.event_id = i.event_id) \
           QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY line) = 1; \
         INSERT INTO exposure_events ({events}, event_key) \
           SELECT {events}, event_key FROM new_events; \
         INSERT INTO exposures_current AS c ({}) \
           SELECT {} FROM (SELECT *, row_number() OVER (PARTITION BY office_id, exposure_id \
                                      ORDER BY \"timestamp\", event_id) AS r FROM new_events) \
           GROUP BY office_id, exposure_id \
           ON CONFLICT (office_id, exposure_id) DO UPDATE SET {};",
        names.join(", "),
        state.join(", "),
        merge.join(", "),
    )
}

/// (2) in its own process: the plain pipeline in one transaction; prints
/// the process's peak RSS in bytes.
fn plain_sql(db: &Path, file: &Path, memory_limit: &str) -> Result<()> {
    let mut config = duckdb::Config::default();
    if !memory_limit.is_empty() {
        config = config.max_memory(memory_limit)?;
    }
    let conn = duckdb::Connection::open_with_flags(db, config)?;
    let columns: Vec<String> = EVENT_COLUMNS
        .iter()
        .map(|(c, t)| format!("\"{c}\": '{t}'"))
        .collect();
    conn.execute_batch("BEGIN TRANSACTION")?;
    conn.execute(
        &format!(
            "CREATE TEMP TABLE incoming AS SELECT * FROM read_ndjson(?, columns = {{{}}})",
            columns.join(", ")
        ),
        [file.to_str().context("a UTF-8 path")?],
    )?;
    conn.execute_batch(&plain_sql_script())?;
    conn.execute_batch("COMMIT")?;
    drop(conn);
    println!("{}", exposure_store::peak_rss_bytes().unwrap_or(0));
    Ok(())
}

/// The tables of the two DuckDB databases that hold different rows
/// (compared as multisets: row count and the sum of the rows' hashes).
fn tables_differ(a: &Path, b: &Path) -> Result<Vec<String>> {
    let fingerprint = |db: &Path, table: &str| -> Result<(i64, String)> {
        let config = duckdb::Config::default().access_mode(duckdb::AccessMode::ReadOnly)?;
        let conn = duckdb::Connection::open_with_flags(db, config)?;
        Ok(conn.query_row(
            &format!("SELECT COUNT(*), SUM(hash(t)::HUGEINT)::VARCHAR FROM {table} AS t"),
            [],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get::<_, Option<String>>(1)?.unwrap_or_default(),
                ))
            },
        )?)
    };
    let mut differing = Vec::new();
    for table in ["exposure_events", "exposures_current"] {
        if fingerprint(a, table)? != fingerprint(b, table)? {
            differing.push(table.to_owned());
        }
    }
    Ok(differing)
}

fn full_path(target: &Target) -> Result<&Path> {
    match target {
        Target::DuckDb(path) => Ok(path),
        Target::Postgres(_) => bail!("not a DuckDB target"),
    }
}

/// (3)'s table, with the ratios of the last file to the first.
fn print_growth(rows: &[Measured]) {
    println!();
    println!("| file | events/s | peak RSS | database size | added by the file |");
    println!("|---|---|---|---|---|");
    let mut before = 0;
    for m in rows {
        println!(
            "| {} | {} MiB |",
            cells(m),
            m.db_bytes.saturating_sub(before) / (1 << 20)
        );
        before = m.db_bytes;
    }
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return;
    };
    let added = |i: usize| {
        let previous = i
            .checked_sub(1)
            .and_then(|p| rows.get(p))
            .map_or(0, |m| m.db_bytes);
        rows.get(i)
            .map_or(0, |m| m.db_bytes.saturating_sub(previous)) as f64
    };
    println!();
    print_ratio("last file / first file, events/s", last, first);
    if let (Some(a), Some(b)) = (last.peak_rss, first.peak_rss) {
        println!(
            "ratio last file / first file, peak RSS: {:.2}",
            a as f64 / b as f64
        );
    }
    println!(
        "ratio last file / first file, database size added: {:.2}",
        added(rows.len() - 1) / added(0)
    );
}

/// A measurement's cells of a table row: name, events/s, peak RSS, size.
fn cells(m: &Measured) -> String {
    format!(
        "{} | {:.0} | {} | {} MiB",
        m.name,
        m.events as f64 / m.seconds,
        mib(m.peak_rss),
        m.db_bytes / (1 << 20),
    )
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".to_owned(), |b| {
        format!("{:.0} MiB", b as f64 / f64::from(1 << 20))
    })
}

/// (5) Median latency of the dashboard reads on the grown database.
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
