//! End-to-end: the built `exposure-store` binary on temporary directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use rstest::rstest;

use crate::helpers::{Backend, TestResult};

const BIN: &str = env!("CARGO_BIN_EXE_exposure-store");

const GOOD: &str = r#"{"event_id":"g-1","timestamp":"2025-01-05T16:00:03.161-08:00","office_id":"office-005","asset_id":"asset-005-00026","exposure_id":"EXP-ac87f8505ae9","exposure_class":"outdated_software","event_action":"opened","status":"open","severity":"medium","risk_score":6.4,"hostname":"ws-005-00026.corp.example","asset_ip":"10.5.0.27","dst_ip":"10.5.0.27","dst_port":53,"protocol":"udp","service_name":"domain","service_product":"dnsmasq","service_version":"2.89","scan_run_id":null,"raw_payload_json":{"scanner":"agent","plugin_id":97035,"seq":0,"tags":[]}}"#;

/// A temporary directory for input files, and the database the CLI is
/// pointed at through the environment: a DuckDB file in the directory, or
/// a new database on the test PostgreSQL server.
struct Env {
    dir: tempfile::TempDir,
    db: PathBuf,
    url: Option<String>,
}

impl Env {
    fn new(backend: Backend) -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("data").join("exposures.duckdb");
        let url = match backend {
            Backend::DuckDb => None,
            Backend::Postgres => Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(crate::helpers::postgres_database())?,
            ),
        };
        Ok(Self { dir, db, url })
    }

    fn run(&self, args: &[&str]) -> TestResult<Output> {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("DB_PATH", &self.db)
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG");
        if let Some(url) = &self.url {
            command.env("DATABASE_URL", url);
        }
        let out = command.output()?;
        if self.url.is_some() {
            assert!(!self.db.exists(), "a DuckDB file was written on PostgreSQL");
        }
        Ok(out)
    }

    fn json(&self, args: &[&str]) -> TestResult<(i32, Value)> {
        let out = self.run(args)?;
        let code = out.status.code().ok_or("killed by a signal")?;
        let value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "{e}: stdout was {:?}, stderr {:?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok((code, value))
    }

    fn file(&self, name: &str, content: impl AsRef<[u8]>) -> TestResult<PathBuf> {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
        Ok(path)
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn line(id: &str, edit: impl Fn(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(GOOD).expect("GOOD is JSON");
    v["event_id"] = Value::from(id);
    edit(&mut v);
    v.to_string()
}

/// The line with one byte of its host name replaced by Latin-1 "é".
fn latin1(line: &str) -> Vec<u8> {
    let mut bytes = line.as_bytes().to_vec();
    if let Some(pos) = line.find("corp.example") {
        bytes[pos] = 0xE9;
    }
    bytes
}

#[rstest]
fn generate_ingest_reingest_and_query(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let env = Env::new(backend)?;
    let generated = Command::new(BIN)
        .args([
            "generate",
            "--events",
            "300",
            "--exposures",
            "40",
            "--offices",
            "4",
            "--seed",
            "9",
        ])
        .output()?;
    assert!(generated.status.success());
    let file = env.file("scan.ndjson", &generated.stdout)?;

    let (code, first) = env.json(&["ingest", "--json", "--chunk-size", "7", s(&file)])?;
    assert_eq!(code, 0, "{first}");
    assert_eq!(first["files_ingested"], 1);
    assert_eq!(first["totals"]["events_inserted"], 300);
    let keys = first["totals"]["exposures_inserted"]
        .as_u64()
        .ok_or("no key count")?;
    assert!(keys > 30 && keys <= 40);
    assert_eq!(first["files"][0]["outcome"], "ingested");

    // The same file again is a no-op.
    let (code, again) = env.json(&["ingest", "--json", s(&file)])?;
    assert_eq!(code, 0);
    assert_eq!(again["totals"]["events_inserted"], 0);
    assert_eq!(again["totals"]["events_skipped"], 300);
    assert_eq!(again["totals"]["exposures_updated"], 0);

    let (code, summary) = env.json(&["summary", "--json"])?;
    assert_eq!(code, 0);
    assert_eq!(summary["totals"]["events"], 300);
    assert_eq!(summary["totals"]["exposures"], keys);
    let by_office: u64 = summary["counts"]["by_office"]
        .as_array()
        .ok_or("no office counts")?
        .iter()
        .filter_map(|pair| pair[1].as_u64())
        .sum();
    assert_eq!(by_office, keys);

    let (code, rows) = env.json(&[
        "exposures",
        "--json",
        "--office",
        "office-001",
        "--limit",
        "5",
    ])?;
    assert_eq!(code, 0);
    let rows = rows.as_array().ok_or("not a list")?;
    assert!(!rows.is_empty() && rows.len() <= 5);
    assert!(rows.iter().all(|r| r["office_id"] == "office-001"));
    let seen: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["last_seen"].as_str())
        .collect();
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");

    let text = env.run(&["exposures", "--severity", "CRITICAL"])?;
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("LAST SEEN"));
    Ok(())
}

/// Each bad input quarantines exactly its file, with a precise reason.
#[rstest]
fn bad_files_are_quarantined_and_the_rest_ingested(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let env = Env::new(backend)?;
    let dir = env.dir.path().join("in");
    let cases: Vec<(&str, Vec<u8>, &str, Option<&str>)> = vec![
        (
            "01-malformed.ndjson",
            format!("{}\n{{\"event_id\": \"x\",\n", line("m1", |_| ())).into_bytes(),
            "invalid_json",
            None,
        ),
        (
            "02-missing.ndjson",
            line("s1", |v| {
                v.as_object_mut().map(|o| o.remove("severity"));
            })
            .into_bytes(),
            "invalid_event",
            Some("severity"),
        ),
        (
            "03-wrong-type.jsonl",
            line("w1", |v| v["risk_score"] = Value::from("high")).into_bytes(),
            "invalid_event",
            Some("risk_score"),
        ),
        (
            "04-unknown-severity.ndjson",
            line("u1", |v| v["severity"] = Value::from("urgent")).into_bytes(),
            "invalid_event",
            Some("severity"),
        ),
        (
            "05-bad-timestamp.ndjson",
            line("t1", |v| v["timestamp"] = Value::from("yesterday")).into_bytes(),
            "invalid_event",
            Some("timestamp"),
        ),
        ("06-empty.ndjson", Vec::new(), "empty_file", None),
        (
            "07-latin1.ndjson",
            latin1(&line("l1", |_| ())),
            "invalid_encoding",
            None,
        ),
        (
            "08-not-an-object.ndjson",
            b"[1, 2, 3]\n".to_vec(),
            "invalid_event",
            None,
        ),
        (
            "09-bad-port.ndjson",
            line("p1", |v| v["dst_port"] = Value::from(70_000)).into_bytes(),
            "invalid_event",
            Some("dst_port"),
        ),
    ];
    for (name, content, _, _) in &cases {
        env.file(&format!("in/{name}"), content)?;
    }
    // Good files around them: BOM, CRLF and blank lines are fine.
    env.file(
        "in/00-good.ndjson",
        format!(
            "\u{feff}{}\r\n\r\n{}\r\n",
            line("a1", |_| ()),
            line("a2", |v| v["exposure_id"] = Value::from("EXP-2"))
        ),
    )?;
    env.file(
        "in/99-good.jsonl",
        format!(
            "\n{}\n",
            line("z1", |v| v["exposure_id"] = Value::from("EXP-3"))
        ),
    )?;
    env.file("in/ignored.txt", "not ndjson")?;

    let (code, out) = env.json(&["ingest", "--json", s(&dir)])?;
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["files_ingested"], 2);
    assert_eq!(out["files_quarantined"], cases.len());
    assert_eq!(out["totals"]["events_inserted"], 3);
    let files = out["files"].as_array().ok_or("no files")?;
    for (name, _, error_type, field) in &cases {
        let report = files
            .iter()
            .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with(name)))
            .ok_or(format!("{name} missing from the report"))?;
        assert_eq!(report["outcome"], "quarantined", "{name}");
        assert_eq!(
            report["rejection"]["error_type"], *error_type,
            "{name}: {report}"
        );
        if let Some(field) = field {
            assert_eq!(
                report["rejection"]["details"]["field"], *field,
                "{name}: {report}"
            );
            assert_eq!(
                report["rejection"]["details"]["line"], 1,
                "{name}: {report}"
            );
        }
    }

    // Nothing of a quarantined file reached the tables.
    let (_, summary) = env.json(&["summary", "--json"])?;
    assert_eq!(summary["totals"]["events"], 3);
    assert_eq!(summary["totals"]["exposures"], 3);
    assert_eq!(summary["totals"]["quarantined_files"], cases.len());
    let (_, quarantine) = env.json(&["quarantine", "--json"])?;
    let first = &quarantine[0];
    assert!(
        first["filename"]
            .as_str()
            .is_some_and(|f| f.ends_with("01-malformed.ndjson"))
    );
    assert_eq!(first["error_type"], "invalid_json");
    assert_eq!(first["error_details_json"]["line"], 2);
    Ok(())
}

#[rstest]
fn a_file_that_fails_late_leaves_nothing_behind(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let env = Env::new(backend)?;
    let mut content = String::new();
    for i in 0..2_000 {
        content.push_str(&line(&format!("late-{i}"), |v| {
            v["exposure_id"] = Value::from(format!("EXP-{}", i % 50))
        }));
        content.push('\n');
    }
    content.push_str("{oops\n");
    let file = env.file("late-error.ndjson", content)?;
    // The next file, in the same process, stores exactly its own events
    // (nothing of the failed file's last appends may run in its unit of
    // work).
    let next = env.file("next.ndjson", format!("{}\n", line("next-1", |_| ())))?;
    let (code, out) = env.json(&[
        "ingest",
        "--json",
        "--chunk-size",
        "100",
        s(&file),
        s(&next),
    ])?;
    assert_eq!(code, 1);
    assert_eq!(out["files"][0]["rejection"]["details"]["line"], 2_001);
    assert_eq!(out["files"][1]["stats"]["events_inserted"], 1);
    let (_, summary) = env.json(&["summary", "--json"])?;
    assert_eq!(summary["totals"]["events"], 1);
    assert_eq!(summary["totals"]["exposures"], 1);
    Ok(())
}

#[rstest]
fn a_line_of_many_megabytes_is_rejected_with_its_reason(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let env = Env::new(backend)?;
    let huge = line("huge", |v| {
        v["raw_payload_json"] = Value::from("x".repeat(3 * 1024 * 1024))
    });
    let file = env.file("huge.ndjson", format!("{}\n{huge}\n", line("ok", |_| ())))?;
    let (code, out) = env.json(&["ingest", "--json", "--max-line-bytes", "1048576", s(&file)])?;
    assert_eq!(code, 1);
    let rejection = &out["files"][0]["rejection"];
    assert_eq!(rejection["error_type"], "line_too_long");
    assert_eq!(rejection["details"]["line"], 2);
    assert_eq!(rejection["details"]["limit_bytes"], 1_048_576);
    // Under the default limit the same file is fine.
    let (code, _) = env.json(&["ingest", "--json", s(&file)])?;
    assert_eq!(code, 0);
    Ok(())
}

#[rstest]
fn text_output_reports_each_file_and_totals(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let env = Env::new(backend)?;
    let good = env.file("good.ndjson", format!("{}\n", line("t-1", |_| ())))?;
    let bad = env.file("bad.ndjson", "{\n")?;
    let out = env.run(&["ingest", s(&good), s(&bad)])?;
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ingested     ") && stdout.contains("good.ndjson: 1 events"),
        "{stdout}"
    );
    assert!(
        stdout.contains("quarantined  ") && stdout.contains("bad.ndjson: invalid_json: line 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("total: 1 files ingested, 1 quarantined"),
        "{stdout}"
    );
    let listed = env.run(&["quarantine"])?;
    assert!(String::from_utf8_lossy(&listed.stdout).contains("bad.ndjson  invalid_json"));
    Ok(())
}

#[test]
fn usage_errors_and_unusable_databases_exit_2() -> TestResult {
    let env = Env::new(Backend::DuckDb)?;
    let out = env.run(&["ingest", "--no-such-flag", "x"])?;
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&["ingest", s(&env.dir.path().join("missing.ndjson"))])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.ndjson"));
    let out = env.run(&["exposures", "--severity", "urgent"])?;
    assert_eq!(out.status.code(), Some(2));

    let blocker = env.file("blocker", "a file, not a directory")?;
    let good = env.file("good.ndjson", format!("{}\n", line("x", |_| ())))?;
    let out = Command::new(BIN)
        .args(["ingest", "--db", s(&blocker.join("db.duckdb")), s(&good)])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot open database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A PostgreSQL server that is not there: exit 2, the password hidden.
    let out = Command::new(BIN)
        .args(["summary", "--database-url"])
        .arg("postgres://scanner:hunter2@127.0.0.1:1/exposures")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "cannot connect to PostgreSQL at postgres://scanner:***@127.0.0.1:1/exposures"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    Ok(())
}

#[rstest]
fn migrate_verbs_and_init_through_the_cli(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let env = Env::new(backend)?;
    let out = env.run(&["init"])?;
    assert!(out.status.success());
    let status = env.run(&["migrate", "status"])?;
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("applied")).count(),
        6,
        "{text}"
    );
    let down = env.run(&["migrate", "down", "-n", "2"])?;
    assert_eq!(
        String::from_utf8_lossy(&down.stdout)
            .lines()
            .filter(|l| l.starts_with("pending"))
            .count(),
        2
    );
    for verb in [
        ["migrate", "up"],
        ["migrate", "refresh"],
        ["migrate", "fresh"],
    ] {
        let out = env.run(&verb)?;
        assert!(
            out.status.success(),
            "{verb:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("applied"))
                .count(),
            6
        );
    }
    let reset = env.run(&["migrate", "reset"])?;
    assert_eq!(
        String::from_utf8_lossy(&reset.stdout)
            .lines()
            .filter(|l| l.starts_with("pending"))
            .count(),
        6
    );
    Ok(())
}

/// A file that vanished before it was read, or cannot be read as a file,
/// is quarantined as an I/O error; the run goes on.
#[rstest]
#[tokio::test]
async fn unreadable_files_are_quarantined_as_io_errors(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    use exposure_store::{FileOutcome, Limits, ingest_file};
    let t = crate::helpers::TestDb::new(backend).await?;
    let repo = exposure_store::ExposureRepository::default();
    let gone = t.dir.path().join("gone.ndjson");
    let directory = t.dir.path().join("a-directory.ndjson");
    std::fs::create_dir(&directory)?;
    for path in [&gone, &directory] {
        let report = ingest_file(&t.db, repo, path, Limits::default(), None).await?;
        match report.outcome {
            FileOutcome::Quarantined { rejection } => {
                assert_eq!(
                    rejection.error_type.as_str(),
                    "io_error",
                    "{}: {rejection:?}",
                    path.display()
                );
            }
            other => panic!("{} was not quarantined: {other:?}", path.display()),
        }
    }
    let listed = exposure_store::ExposureRepository::default()
        .quarantined_files(&t.db)
        .await?;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|q| q.error_type == "io_error"));
    Ok(())
}

#[test]
fn generate_into_a_closed_pipe_exits_quietly() -> TestResult {
    let mut child = Command::new(BIN)
        .args(["generate", "--events", "200000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // Read one line, then hang up, like `generate | head -1`.
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut first = [0_u8; 64];
    std::io::Read::read_exact(&mut stdout, &mut first)?;
    drop(stdout);
    let out = child.wait_with_output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `verify` says all is well (exit 0); after a value of the current state
/// is changed behind the tool's back it names the key and the column
/// (exit 1, `--json` too); `rebuild` puts it back and says what it did.
#[rstest]
fn verify_and_rebuild(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let env = Env::new(backend)?;
    let older = line("v-1", |v| v["hostname"] = Value::from("old-host"));
    let newer = line("v-2", |v| {
        v["timestamp"] = Value::from("2025-01-06T00:00:00Z");
        v["hostname"] = Value::Null;
    });
    let file = env.file("scan.ndjson", format!("{older}\n{newer}\n"))?;
    assert_eq!(env.run(&["ingest", s(&file)])?.status.code(), Some(0));

    let out = env.run(&["verify"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("ok: 2 events, 1 current exposures, 0 quarantined files read"),
        "{text}"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use exposure_store::entity::{exposure_current, prelude::ExposuresCurrent};
        use sea_orm::EntityTrait;
        let db = crate::helpers::reopen(&env.db, env.url.as_deref()).await?;
        ExposuresCurrent::update_many()
            .col_expr(
                exposure_current::Column::Hostname,
                sea_orm::sea_query::Expr::value("tampered"),
            )
            .exec(&db)
            .await?;
        TestResult::Ok(())
    })?;

    let out = env.run(&["verify"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("differs office-005/EXP-ac87f8505ae9: hostname\n"),
        "{text}"
    );
    let (code, report) = env.json(&["verify", "--json"])?;
    assert_eq!(code, 1);
    assert_eq!(
        report["differences"],
        serde_json::json!([{
            "office_id": "office-005",
            "exposure_id": "EXP-ac87f8505ae9",
            "kind": "differs",
            "columns": ["hostname"],
        }])
    );

    let out = env.run(&["rebuild"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("rebuilt: 1 key(s) updated, 0 inserted, 0 removed\n"),
        "{text}"
    );
    let (_, rows) = env.json(&["exposures", "--json"])?;
    assert_eq!(rows[0]["hostname"], "old-host", "{rows}");
    assert_eq!(env.run(&["verify"])?.status.code(), Some(0));
    let out = env.run(&["rebuild"])?;
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("nothing to change"));
    Ok(())
}

impl Env {
    /// Runs the CLI with its standard output closed before it writes
    /// anything (like `... | head -0`); returns its status and stderr.
    fn run_with_stdout_closed(&self, args: &[&str]) -> TestResult<(Option<i32>, String)> {
        let mut child = Command::new(BIN)
            .args(args)
            .env("DB_PATH", &self.db)
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        drop(child.stdout.take());
        let out = child.wait_with_output()?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    fn events_stored(&self) -> TestResult<Value> {
        let (_, summary) = self.json(&["summary", "--json"])?;
        Ok(summary["totals"]["events"].clone())
    }
}

/// `ingest DIR | head -1`: the reader going away neither stops the run nor
/// changes its status; every file is ingested (and a quarantined one still
/// makes the status 1). Query commands end normally too.
#[test]
fn a_closed_stdout_never_abandons_work() -> TestResult {
    let env = Env::new(Backend::DuckDb)?;
    for i in 0..12 {
        env.file(
            &format!("in/f{i:02}.ndjson"),
            format!("{}\n", line(&format!("p-{i}"), |_| ())),
        )?;
    }
    let dir = env.dir.path().join("in");
    let (code, stderr) = env.run_with_stdout_closed(&["ingest", s(&dir)])?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("report is incomplete"), "{stderr}");
    assert_eq!(env.events_stored()?, 12);

    env.file("in/zz-bad.ndjson", "{\n")?;
    let (code, stderr) = env.run_with_stdout_closed(&["ingest", "--json", s(&dir)])?;
    assert_eq!(code, Some(1), "one file quarantined: {stderr}");
    assert_eq!(env.events_stored()?, 12);

    for args in [
        &["exposures"][..],
        &["exposures", "--json"],
        &["summary"],
        &["quarantine"],
        &["verify"],
        &["migrate", "status"],
    ] {
        let (code, stderr) = env.run_with_stdout_closed(args)?;
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
    Ok(())
}

/// A file whose name is not UTF-8 is ingested and reported like any other:
/// `--json` shows the name as text and its exact bytes, escaped; so does a
/// quarantine row.
#[test]
fn file_names_that_are_not_utf8_are_reported() -> TestResult {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new(Backend::DuckDb)?;
    let good = env
        .dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"good-\xff.ndjson"));
    std::fs::write(&good, format!("{}\n", line("u-1", |_| ())))?;
    let bad = env
        .dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"bad-\xfe\\.ndjson"));
    std::fs::write(&bad, "{\n")?;
    let out = Command::new(BIN)
        .args(["ingest", "--json"])
        .arg(&good)
        .arg(&bad)
        .env("DB_PATH", &env.db)
        .env_remove("DATABASE_URL")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let files = &report["files"];
    assert_eq!(files[0]["outcome"], "ingested", "{report}");
    assert!(
        files[0]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("good-\u{fffd}.ndjson")),
        "{report}"
    );
    assert!(
        files[0]["path_escaped"]
            .as_str()
            .is_some_and(|p| p.ends_with("good-\\xff.ndjson")),
        "{report}"
    );
    assert_eq!(files[1]["outcome"], "quarantined", "{report}");
    let (_, quarantine) = env.json(&["quarantine", "--json"])?;
    assert!(
        quarantine[0]["error_details_json"]["path_escaped"]
            .as_str()
            .is_some_and(|p| p.ends_with("bad-\\xfe\\\\.ndjson")),
        "{quarantine}"
    );
    assert_eq!(env.events_stored()?, 1);
    Ok(())
}

/// A FIFO (or any file that is not regular) given to `ingest` is refused
/// at once, before the database is opened; in a directory it is skipped.
#[test]
fn a_fifo_is_refused_before_the_database_is_opened() -> TestResult {
    let env = Env::new(Backend::DuckDb)?;
    let fifo = env.dir.path().join("in").join("stream.ndjson");
    std::fs::create_dir_all(fifo.parent().ok_or("no parent")?)?;
    let made = Command::new("mkfifo").arg(&fifo).status()?;
    assert!(made.success());
    env.file("in/real.ndjson", format!("{}\n", line("r-1", |_| ())))?;

    let out = env.run(&["ingest", s(&fifo)])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(!env.db.exists(), "the database was opened");

    let out = env.run(&["ingest", s(&env.dir.path().join("in"))])?;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(env.events_stored()?, 1);
    Ok(())
}

/// The query commands open the DuckDB file read-only: they run while
/// another process has it open read-only (which a writer cannot), they
/// never create a file, and they never migrate (they say what is pending).
#[test]
fn query_commands_only_read() -> TestResult {
    let env = Env::new(Backend::DuckDb)?;
    let file = env.file("one.ndjson", format!("{}\n", line("q-1", |_| ())))?;
    assert_eq!(env.run(&["ingest", s(&file)])?.status.code(), Some(0));

    let reader = duckdb::Connection::open_with_flags(
        &env.db,
        duckdb::Config::default().access_mode(duckdb::AccessMode::ReadOnly)?,
    )?;
    for args in [
        &["summary"][..],
        &["exposures", "--json"],
        &["quarantine"],
        &["verify"],
    ] {
        let out = env.run(args)?;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let writer = env.run(&["ingest", s(&file)])?;
    assert_eq!(
        writer.status.code(),
        Some(2),
        "a writer got in beside a reader"
    );
    drop(reader);

    let missing = env.dir.path().join("missing.duckdb");
    let out = Command::new(BIN)
        .args(["summary", "--db", s(&missing)])
        .env_remove("DATABASE_URL")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no such database file"), "{stderr}");
    assert!(!missing.exists());

    assert!(env.run(&["migrate", "down"])?.status.success());
    let out = env.run(&["summary"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("schema is not current")
            && stderr.contains("m20261128_000006_key_events_on_duckdb"),
        "{stderr}"
    );
    let status = env.run(&["migrate", "status"])?;
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("pending  m20261128_000006"),
        "summary migrated the database"
    );
    Ok(())
}

/// Set-but-empty variables mean unset (the defaults), as the README says;
/// `--limit` refuses what the databases cannot take, with a usage error.
#[test]
fn empty_variables_and_huge_limits_are_usage_not_crashes() -> TestResult {
    let out = Command::new(BIN)
        .args(["summary"])
        .env("DB_PATH", "")
        .env("DATABASE_URL", "")
        .env("DUCKDB_MEMORY_LIMIT", "")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("a value is required"), "{stderr}");
    assert!(
        out.status.success() || stderr.contains("/app/data/exposures.duckdb"),
        "the default path was not used: {stderr}"
    );

    let env = Env::new(Backend::DuckDb)?;
    assert!(env.run(&["init"])?.status.success());
    let out = env.run(&["exposures", "--limit", "9223372036854775808"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--limit"), "{stderr}");
    assert!(!stderr.contains("Conversion Error"), "{stderr}");
    let out = env.run(&["exposures", "--limit", "9223372036854775807"])?;
    assert_eq!(out.status.code(), Some(0));
    Ok(())
}

/// Every log line of a file's work says which file it belongs to, and the
/// closing line gives its event count.
#[test]
fn log_lines_name_their_file() -> TestResult {
    let env = Env::new(Backend::DuckDb)?;
    let a = env.file("a.ndjson", format!("{}\n", line("l-1", |_| ())))?;
    let b = env.file(
        "b.ndjson",
        format!("{}\n{}\n", line("l-2", |_| ()), line("l-3", |_| ())),
    )?;
    let out = Command::new(BIN)
        .args(["--db", s(&env.db), "ingest", s(&a), s(&b)])
        .env("RUST_LOG", "exposure_store=debug")
        .env("NO_COLOR", "1")
        .output()?;
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let chunks: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("chunk ingested"))
        .collect();
    assert_eq!(chunks.len(), 2, "{stderr}");
    assert!(
        chunks[0].contains(&format!("file{{path={}}}", a.display())),
        "{stderr}"
    );
    assert!(
        chunks[1].contains(&format!("file{{path={}}}", b.display())),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(&format!("path={} events=2}}", b.display()))
                && l.contains("file ingested")),
        "{stderr}"
    );
    Ok(())
}
