//! Two DuckDB 2.0.0 failures behind exposure-store's reliability work,
//! reduced to the `duckdb` crate alone (no adapter, no Sea-ORM). The README's
//! *Reliability* section says what they mean for the project.
//!
//! 1. **Corrupted segments** (default mode). Five "files" of 1,000 events
//!    each, one transaction per file on a fresh connection of one instance,
//!    written to `exposures_current` the way exposure-store's ingest did
//!    until it was changed: the stored rows of the file's keys are copied
//!    into a temporary working table with the same primary key, deleted
//!    from `exposures_current`, merged there with `INSERT ... ON CONFLICT DO
//!    UPDATE`, and inserted back. About 1 run in 60 fails with `Data
//!    Corruption Error: Corrupted uncompressed string segment: dictionary
//!    offset N exceeds dictionary size M` (or `Corrupted fixed-size segment:
//!    array count extends past the end of the segment`), always in the
//!    statement that reads `exposures_current` back. It does not happen
//!    with `--current upsert` (the same merge in place, no delete and
//!    re-insert), with `--threads 1`, or with `--segment-size 262144` (one
//!    full block per column segment instead of DuckDB 2.0's small shared
//!    ones): a race between DuckDB's worker threads on the small, growing
//!    in-memory segments that the delete-and-re-insert churn produces.
//! 2. **A failed COMMIT stores the wrong rows** (`--fail-commit LIMIT`, or
//!    `sweep` for 4 MB to 12 MB): see [`fail_commit`].
//!
//! ```sh
//! cargo run --release -p duckdb-adapter --example write_pattern -- --runs 300
//! cargo run --release -p duckdb-adapter --example write_pattern -- --runs 300 --current upsert
//! cargo run --release -p duckdb-adapter --example write_pattern -- --fail-commit sweep
//! ```
//!
//! Prints one line per failing run and a closing `runs: N, failed: M` line;
//! exits 1 when a run failed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use duckdb::Connection;

const FILES: u64 = 5;

const CURRENT: &str = "office_id VARCHAR NOT NULL, exposure_id VARCHAR NOT NULL, \
    exposure_class VARCHAR NOT NULL, status VARCHAR NOT NULL, severity VARCHAR NOT NULL, \
    event_action VARCHAR NOT NULL, risk_score DOUBLE, first_seen TIMESTAMPTZ NOT NULL, \
    last_seen TIMESTAMPTZ NOT NULL, asset_id VARCHAR NOT NULL, hostname VARCHAR, \
    asset_ip VARCHAR, dst_ip VARCHAR, dst_port INTEGER, protocol VARCHAR, service_name VARCHAR, \
    service_product VARCHAR, service_version VARCHAR";

const COLUMNS: &str = "office_id, exposure_id, exposure_class, status, severity, event_action, \
    risk_score, first_seen, last_seen, asset_id, hostname, asset_ip, dst_ip, dst_port, protocol, \
    service_name, service_product, service_version";

/// The merge of exposure-store's upsert, into table `{t}`.
const MERGE: &str = "first_seen = LEAST(excluded.first_seen, {t}.first_seen), \
    last_seen = GREATEST(excluded.last_seen, {t}.last_seen), \
    status = CASE WHEN excluded.last_seen >= {t}.last_seen THEN excluded.status ELSE {t}.status END, \
    severity = CASE WHEN excluded.last_seen >= {t}.last_seen THEN excluded.severity ELSE {t}.severity END, \
    event_action = CASE WHEN excluded.last_seen >= {t}.last_seen THEN excluded.event_action ELSE {t}.event_action END, \
    exposure_class = excluded.exposure_class, \
    risk_score = CASE WHEN excluded.last_seen >= {t}.last_seen THEN excluded.risk_score ELSE {t}.risk_score END, \
    asset_id = excluded.asset_id, \
    hostname = COALESCE(excluded.hostname, {t}.hostname), asset_ip = COALESCE(excluded.asset_ip, {t}.asset_ip), \
    dst_ip = COALESCE(excluded.dst_ip, {t}.dst_ip), dst_port = COALESCE(excluded.dst_port, {t}.dst_port), \
    protocol = COALESCE(excluded.protocol, {t}.protocol), service_name = COALESCE(excluded.service_name, {t}.service_name), \
    service_product = COALESCE(excluded.service_product, {t}.service_product), \
    service_version = COALESCE(excluded.service_version, {t}.service_version)";

/// Synthetic events (2,000 exposures, 20 offices, ~15% NULL details), made
/// in a private in-memory database with a seeded generator.
const EVENTS: &str = "CREATE TABLE gen.ev AS SELECT i // 1000 AS f,
    'office-' || lpad((k % 20)::VARCHAR, 3, '0') AS office_id, 'exp-' || md5('x' || k)[1:12] AS exposure_id,
    ['vuln','open_port','misconfig','cert'][1 + k % 4] AS exposure_class,
    ['open','closed','mitigated'][1 + (random()*3)::INT % 3] AS status,
    ['info','low','medium','high','critical'][1 + (random()*5)::INT % 5] AS severity,
    ['opened','updated','closed'][1 + (random()*3)::INT % 3] AS event_action,
    CASE WHEN random() < .15 THEN NULL ELSE round(random()*10, 2) END AS risk_score,
    to_timestamp(1767225600 + i*7 + (random()*5000)::INT) AS ts,
    'asset-' || (k % 20) || '-' || (k // 20 % 37) AS asset_id,
    CASE WHEN random() < .15 THEN NULL ELSE 'host-' || k || '.corp.example.com' END AS hostname,
    CASE WHEN random() < .15 THEN NULL ELSE '10.' || (k % 20) || '.' || (k % 37) || '.' || (k % 251) END AS asset_ip,
    CASE WHEN random() < .15 THEN NULL ELSE '192.168.' || (k % 7) || '.' || (k % 200) END AS dst_ip,
    CASE WHEN random() < .15 THEN NULL ELSE 22 + k % 5 END AS dst_port,
    CASE WHEN random() < .15 THEN NULL ELSE ['tcp','udp'][1 + k % 2] END AS protocol,
    CASE WHEN random() < .15 THEN NULL ELSE 'svc' || (k % 5) END AS service_name,
    CASE WHEN random() < .15 THEN NULL ELSE 'product ' || (k % 5) END AS service_product,
    CASE WHEN random() < .15 THEN NULL ELSE (k % 9) || '.' || (i % 7) END AS service_version
  FROM (SELECT i, (random()*2000)::INT AS k FROM range(5000) t(i))";

/// One row per key of file `$1`: the newest values, like exposure-store's fold.
const FOLD: &str = "INSERT INTO stage_current SELECT office_id, exposure_id,
    arg_max(exposure_class, ts), arg_max(status, ts), arg_max(severity, ts), arg_max(event_action, ts),
    arg_max(risk_score, ts), min(ts), max(ts), arg_max(asset_id, ts), arg_max(hostname, ts),
    arg_max(asset_ip, ts), arg_max(dst_ip, ts), arg_max(dst_port, ts), arg_max(protocol, ts),
    arg_max(service_name, ts), arg_max(service_product, ts), arg_max(service_version, ts)
  FROM gen.ev WHERE f = ? GROUP BY office_id, exposure_id";

#[derive(Debug, Clone)]
struct Options {
    runs: u64,
    /// `replace` (copy, delete, merge, re-insert) or `upsert` (merge in place).
    current: String,
    threads: Option<String>,
    segment_size: Option<String>,
    fail_commit: Option<String>,
    dir: PathBuf,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        runs: 100,
        current: "replace".into(),
        threads: None,
        segment_size: None,
        fail_commit: None,
        dir: std::env::temp_dir().join("duckdb-write-pattern"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => o.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--current" => o.current = value()?,
            "--threads" => o.threads = Some(value()?),
            "--segment-size" => o.segment_size = Some(value()?),
            "--fail-commit" => o.fail_commit = Some(value()?),
            "--dir" => o.dir = PathBuf::from(value()?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn open(path: &Path, o: &Options) -> duckdb::Result<Connection> {
    let mut config = duckdb::Config::default()
        .with("autoinstall_known_extensions", "false")?
        .with("autoload_known_extensions", "false")?;
    if let Some(threads) = &o.threads {
        config = config.with("threads", threads)?;
    }
    if let Some(size) = &o.segment_size {
        config = config.with("initial_column_segment_size", size)?;
    }
    Connection::open_with_flags(path, config)
}

/// One file, one transaction on a fresh connection.
fn write_file(root: &Connection, o: &Options, file: u64) -> duckdb::Result<()> {
    let conn = root.try_clone()?;
    conn.execute_batch(&format!(
        "BEGIN TRANSACTION;
         CREATE TEMPORARY TABLE stage_current ({CURRENT});
         CREATE TEMPORARY TABLE work_current ({CURRENT}, PRIMARY KEY (office_id, exposure_id));"
    ))?;
    let result = (|| {
        conn.execute(FOLD, [file as i64])?;
        let replace = o.current == "replace" && file > 0;
        let target = if replace {
            "work_current"
        } else {
            "exposures_current"
        };
        if replace {
            conn.execute_batch(&format!(
                "INSERT INTO work_current SELECT {COLUMNS} FROM exposures_current c WHERE EXISTS
                   (SELECT 1 FROM stage_current s WHERE s.office_id = c.office_id AND s.exposure_id = c.exposure_id);
                 DELETE FROM exposures_current c WHERE EXISTS
                   (SELECT 1 FROM work_current w WHERE w.office_id = c.office_id AND w.exposure_id = c.exposure_id);"
            ))?;
        }
        conn.execute_batch(&format!(
            "INSERT INTO {target} SELECT {COLUMNS} FROM stage_current
             ON CONFLICT (office_id, exposure_id) DO UPDATE SET {}",
            MERGE.replace("{t}", target)
        ))?;
        if replace {
            conn.execute_batch(&format!(
                "INSERT INTO exposures_current SELECT {COLUMNS} FROM work_current"
            ))?;
        }
        conn.execute_batch("COMMIT")
    })();
    if result.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

/// One run on a fresh database; the first error, if any.
fn run(path: &Path, o: &Options, seed: u64) -> duckdb::Result<Option<String>> {
    remove(path);
    let root = open(path, o)?;
    root.execute_batch(&format!(
        "CREATE TABLE exposures_current ({CURRENT}, PRIMARY KEY (office_id, exposure_id));
         ATTACH ':memory:' AS gen;"
    ))?;
    root.execute("SELECT setseed(?)", [(seed % 997) as f64 / 997.0])?;
    root.execute_batch(EVENTS)?;
    for file in 0..FILES {
        if let Err(e) = write_file(&root, o, file) {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            return Ok(Some(format!("file {file}: {first}")));
        }
    }
    Ok(None)
}

fn count(conn: &Connection, sql: &str) -> duckdb::Result<i64> {
    conn.query_row(sql, [], |r| r.get(0))
}

fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(format!("{}.wal", path.display()));
}

/// Problem 2, reduced: a transaction appends 60,000 rows, its COMMIT fails
/// for lack of memory (the limit is lowered just before it), and the next
/// transaction of the same instance inserts 3 rows. On DuckDB 2.0.0 the
/// table then holds 3 rows of the failed transaction instead of the new ones,
/// and the failed rows' keys are still in the primary-key index: the failed
/// COMMIT had started copying the rows into the table and its rollback does
/// not take them out. Returns whether the instance stored the right rows.
fn fail_commit(o: &Options, limit: &str) -> Result<bool, String> {
    let path = o.dir.join("fail-commit.duckdb");
    remove(&path);
    let run = || -> duckdb::Result<bool> {
        let conn = open(&path, o)?;
        conn.execute_batch(
            "SET threads = 1;
             CREATE TABLE ev (event_id VARCHAR PRIMARY KEY, payload VARCHAR);
             INSERT INTO ev SELECT 'base_' || i, repeat('x', 50) FROM range(1000) r(i);
             BEGIN TRANSACTION;
             INSERT INTO ev SELECT 'fail_' || i, repeat('y', 50) FROM range(60000) r(i);",
        )?;
        conn.execute("SET memory_limit = ?", [limit])?;
        match conn.execute_batch("COMMIT") {
            Ok(()) => println!("  COMMIT succeeded"),
            Err(e) => println!(
                "  COMMIT failed: {}",
                e.to_string().lines().next().unwrap_or_default()
            ),
        }
        conn.execute_batch(
            "SET memory_limit = '4GB';
             INSERT INTO ev VALUES ('new_1', 'n'), ('new_2', 'n'), ('new_3', 'n');",
        )?;
        let mut stmt = conn.prepare(
            "SELECT event_id FROM ev WHERE event_id NOT LIKE 'base_%' ORDER BY event_id LIMIT 5",
        )?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        println!("  rows after the base rows: {rows:?}");
        let stored = count(&conn, "SELECT count(*) FROM ev")?;
        let news = count(&conn, "SELECT count(*) FROM ev WHERE event_id LIKE 'new_%'")?;
        Ok(news == 3 && (stored == 1_003 || stored == 61_003))
    };
    run().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&o.dir) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    if let Some(limit) = &o.fail_commit {
        // Where in the COMMIT memory runs out decides what is left behind,
        // so `sweep` tries limits from 4 MB to 12 MB.
        let limits: Vec<String> = match limit.as_str() {
            "sweep" => (4..=12).map(|mb| format!("{mb}MB")).collect(),
            one => vec![one.to_owned()],
        };
        let mut wrong = 0;
        for limit in &limits {
            println!("memory limit {limit}:");
            match fail_commit(&o, limit) {
                Ok(true) => {}
                Ok(false) => wrong += 1,
                Err(e) => println!("  {e}"),
            }
        }
        println!("limits: {}, wrong rows stored: {wrong}", limits.len());
        return if wrong == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    let path = o.dir.join(format!("pattern-{}.duckdb", std::process::id()));
    let mut failed = 0;
    for r in 0..o.runs {
        match run(&path, &o, 100_000 + r) {
            Ok(None) => {}
            Ok(Some(problem)) => {
                failed += 1;
                println!("run {r}: {problem}");
            }
            Err(e) => {
                eprintln!("run {r}: the set-up failed: {e}");
                return ExitCode::from(2);
            }
        }
    }
    remove(&path);
    println!("runs: {}, failed: {failed}", o.runs);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
