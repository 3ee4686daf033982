//! The migration binary, every verb: against DuckDB at `DB_PATH`, and
//! against PostgreSQL at `DATABASE_URL` (the server `scripts/with-postgres`
//! starts; its URL comes in `TEST_DATABASE_URL`).

use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_migration");

fn run(db: &std::path::Path, args: &[&str]) -> Result<(bool, String), Box<dyn std::error::Error>> {
    let out = Command::new(BIN)
        .args(args)
        .env("DB_PATH", db)
        .env_remove("DATABASE_URL")
        .output()?;
    Ok((out.status.success(), String::from_utf8(out.stdout)?))
}

fn count(text: &str, state: &str) -> usize {
    text.lines().filter(|l| l.starts_with(state)).count()
}

#[test]
fn every_verb_on_a_fresh_duckdb_file() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // The directory does not exist yet: the binary creates it.
    let db = dir.path().join("nested").join("exposures.duckdb");
    let (ok, out) = run(&db, &[])?;
    assert!(ok && count(&out, "applied") == 6, "{out}");
    let (ok, out) = run(&db, &["up"])?;
    assert!(
        ok && count(&out, "applied") == 6,
        "up on an up-to-date database is a no-op: {out}"
    );
    let (ok, out) = run(&db, &["down"])?;
    assert!(ok && count(&out, "pending") == 1, "{out}");
    let (ok, out) = run(&db, &["status"])?;
    assert!(ok && count(&out, "applied") == 5, "{out}");
    let (ok, out) = run(&db, &["up", "-n", "1"])?;
    assert!(ok && count(&out, "applied") == 6, "{out}");
    for verb in ["fresh", "refresh"] {
        let (ok, out) = run(&db, &[verb])?;
        assert!(ok && count(&out, "applied") == 6, "{verb}: {out}");
    }
    let (ok, out) = run(&db, &["reset"])?;
    assert!(ok && count(&out, "pending") == 6, "{out}");
    let (ok, _) = run(&db, &["up"])?;
    assert!(ok);

    // A plain DuckDB client reads what the binary created.
    let conn = duckdb::Connection::open(&db)?;
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('exposure_events', 'exposures_current', 'quarantined_files')",
        [],
        |row| row.get(0),
    )?;
    assert_eq!(tables, 3);
    Ok(())
}

/// `DUCKDB_MEMORY_LIMIT` is read as `exposure-store` reads it: a migration
/// that rewrites a large table runs within the operator's limit, and a
/// limit DuckDB refuses stops the binary before it touches the file.
#[test]
fn duckdb_runs_within_the_configured_memory_limit() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("exposures.duckdb");
    let with_limit = |limit: &str| {
        Command::new(BIN)
            .arg("status")
            .env("DB_PATH", &db)
            .env("DUCKDB_MEMORY_LIMIT", limit)
            .env_remove("DATABASE_URL")
            .output()
    };
    let out = with_limit("no such size")?;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!db.exists(), "nothing is created with a refused setting");
    let out = with_limit("256MB")?;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(count(&String::from_utf8(out.stdout)?, "pending"), 6);
    Ok(())
}

/// A new, empty database on the test PostgreSQL server; its URL.
fn postgres_database(name: &str) -> Result<String, Box<dyn std::error::Error>> {
    use sea_orm_migration::sea_orm::{ConnectionTrait, Database};
    let server = std::env::var("TEST_DATABASE_URL")
        .map_err(|_| "TEST_DATABASE_URL is not set: run the suite through scripts/with-postgres")?;
    let name = format!("{name}_{}", std::process::id());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let admin = Database::connect(&server).await?;
            // An identifier made here (CREATE DATABASE takes no bound values).
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await?;
            admin.close().await
        })?;
    let base = server
        .rsplit_once('/')
        .map_or(server.as_str(), |(base, _)| base);
    Ok(format!("{base}/{name}"))
}

fn run_on(
    url: &str,
    args: &[&str],
) -> Result<(Option<i32>, String, String), Box<dyn std::error::Error>> {
    let out = Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", url)
        .env("DB_PATH", "/nonexistent/never-used.duckdb")
        .output()?;
    Ok((
        out.status.code(),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

#[test]
fn every_verb_on_postgres_and_concurrent_runs_take_turns() -> Result<(), Box<dyn std::error::Error>>
{
    let url = postgres_database("migration_cli")?;
    // Four processes migrate the empty database at once: the advisory lock
    // makes them take turns, and all succeed.
    let racers = (0..4)
        .map(|_| {
            Command::new(BIN)
                .arg("up")
                .env("DATABASE_URL", &url)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    for racer in racers {
        let out = racer.wait_with_output()?;
        let stdout = String::from_utf8(out.stdout)?;
        assert!(
            out.status.success() && count(&stdout, "applied") == 6,
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (args, applied) in [
        (&["down", "-n", "2"][..], 4),
        (&["status"][..], 4),
        (&["up"][..], 6),
        (&["fresh"][..], 6),
        (&["refresh"][..], 6),
        (&["reset"][..], 0),
        (&[][..], 6),
    ] {
        let (code, out, err) = run_on(&url, args)?;
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert_eq!(count(&out, "applied"), applied, "{args:?}: {out}");
    }
    assert!(!std::path::Path::new("/nonexistent").exists());

    // No server there: exit 2, and the message says so.
    let (code, _, err) = run_on("postgres://postgres@127.0.0.1:1/none", &["status"])?;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot connect to PostgreSQL"), "{err}");
    Ok(())
}
