//! The migration binary against DuckDB at `DB_PATH`, every verb.

use std::process::Command;

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
    assert!(ok && count(&out, "applied") == 3, "{out}");
    let (ok, out) = run(&db, &["up"])?;
    assert!(
        ok && count(&out, "applied") == 3,
        "up on an up-to-date database is a no-op: {out}"
    );
    let (ok, out) = run(&db, &["down"])?;
    assert!(ok && count(&out, "pending") == 1, "{out}");
    let (ok, out) = run(&db, &["status"])?;
    assert!(ok && count(&out, "applied") == 2, "{out}");
    let (ok, out) = run(&db, &["up", "-n", "1"])?;
    assert!(ok && count(&out, "applied") == 3, "{out}");
    for verb in ["fresh", "refresh"] {
        let (ok, out) = run(&db, &[verb])?;
        assert!(ok && count(&out, "applied") == 3, "{verb}: {out}");
    }
    let (ok, out) = run(&db, &["reset"])?;
    assert!(ok && count(&out, "pending") == 3, "{out}");
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
