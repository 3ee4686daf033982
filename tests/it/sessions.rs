//! Units of work: commit, rollback on error/panic/drop, refused commits,
//! concurrency, and one instance per file.

use std::time::Duration;

use exposure_store::entity::prelude::*;
use exposure_store::{Database, Error};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait};

use rstest::rstest;

use crate::helpers::{Backend, TestDb, TestResult, current_row, event};

async fn count(db: &Database) -> TestResult<u64> {
    Ok(ExposureEvents::find().count(db).await?)
}

#[rstest]
#[tokio::test]
async fn commits_when_the_work_returns_ok(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let seen_inside =
        t.db.transaction(async |s| -> Result<u64, Error> {
            event("a", "2025-01-01T00:00:00Z")
                .into_active_model()
                .insert(s)
                .await?;
            event("b", "2025-01-01T00:00:00Z")
                .into_active_model()
                .insert(s)
                .await?;
            Ok(ExposureEvents::find().count(s).await?)
        })
        .await?;
    assert_eq!(seen_inside, 2);
    assert_eq!(count(&t.db).await?, 2);
    Ok(())
}

#[rstest]
#[tokio::test]
async fn rolls_back_when_the_work_returns_err(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let result =
        t.db.transaction(async |s| -> Result<(), Error> {
            event("a", "2025-01-01T00:00:00Z")
                .into_active_model()
                .insert(s)
                .await?;
            Err(Error::Aborted("the work decided to fail".to_owned()))
        })
        .await;
    assert!(result.is_err());
    assert_eq!(count(&t.db).await?, 0);
    Ok(())
}

#[rstest]
#[tokio::test]
async fn rolls_back_when_the_work_panics(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let db = t.db.clone();
    let task = tokio::spawn(async move {
        db.transaction(async |s| -> Result<(), Error> {
            event("a", "2025-01-01T00:00:00Z")
                .into_active_model()
                .insert(s)
                .await?;
            panic!("work panicked mid-transaction");
        })
        .await
    });
    let joined = task.await;
    assert!(joined.is_err_and(|e| e.is_panic()));
    assert_eq!(count(&t.db).await?, 0);
    // The database is still usable, and the row can be written again.
    event("a", "2025-01-01T00:00:00Z")
        .into_active_model()
        .insert(&t.db)
        .await?;
    assert_eq!(count(&t.db).await?, 1);
    Ok(())
}

#[rstest]
#[tokio::test]
async fn rolls_back_when_the_future_is_dropped(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let work = t.db.transaction(async |s| -> Result<(), Error> {
        event("a", "2025-01-01T00:00:00Z")
            .into_active_model()
            .insert(s)
            .await?;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    });
    let timed_out = tokio::time::timeout(Duration::from_millis(300), work).await;
    assert!(timed_out.is_err(), "the work should still be sleeping");
    assert_eq!(count(&t.db).await?, 0);
    event("a", "2025-01-01T00:00:00Z")
        .into_active_model()
        .insert(&t.db)
        .await?;
    Ok(())
}

#[rstest]
#[tokio::test]
async fn a_unit_of_work_with_a_failed_statement_is_never_committed(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let result =
        t.db.transaction(async |s| -> Result<(), Error> {
            event("kept?", "2025-01-01T00:00:00Z")
                .into_active_model()
                .insert(s)
                .await?;
            // The work swallows an error; DuckDB has aborted the transaction,
            // and its COMMIT would silently roll back.
            let _ignored = s.execute_unprepared("SELECT * FROM no_such_table").await;
            Ok(())
        })
        .await;
    match result {
        // One message on both engines.
        Err(Error::Aborted(message)) => assert!(
            message
                .starts_with("transaction rolled back: a statement of this unit of work failed: ")
                && message.contains("no_such_table"),
            "{message}"
        ),
        other => panic!("expected the commit to be refused, got {other:?}"),
    }
    assert_eq!(count(&t.db).await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_failed_commit_is_an_error_to_the_caller() -> TestResult {
    let t = TestDb::duckdb().await?;
    // Two units of work insert the same new key; the second to commit loses.
    let first = t.db.begin().await?;
    current_row("office-001", "contested")
        .into_active_model()
        .insert(&first)
        .await?;
    let second = t.db.begin().await?;
    let mut other = current_row("office-001", "contested");
    other.asset_id = "asset-999".to_owned();
    // DuckDB may notice the conflict at the INSERT (then the commit is
    // refused) or only at COMMIT (then COMMIT fails): either way, an error.
    let _maybe_conflict = other.into_active_model().insert(&second).await;
    first.commit().await?;
    let outcome = second.commit().await;
    assert!(outcome.is_err(), "the losing unit of work reported success");
    let stored = ExposuresCurrent::find_by_id(("office-001".to_owned(), "contested".to_owned()))
        .one(&t.db)
        .await?;
    assert_eq!(stored.map(|e| e.asset_id), Some("asset-1".to_owned()));
    Ok(())
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_units_of_work_never_share_a_transaction(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let tasks: Vec<_> = (0..48)
        .map(|task| {
            let db = t.db.clone();
            tokio::spawn(async move {
                db.transaction(async |s| -> Result<u64, Error> {
                    for i in 0..10 {
                        let mut e = event(&format!("t{task}-e{i}"), "2025-01-01T00:00:00Z");
                        e.office_id = format!("office-{task}");
                        e.into_active_model().insert(s).await?;
                        tokio::task::yield_now().await;
                    }
                    // Inside its own transaction a task sees exactly its rows
                    // plus what was committed before it began.
                    let mine = ExposureEvents::find()
                        .filter_office(&format!("office-{task}"))
                        .count(s)
                        .await?;
                    if task % 4 == 0 {
                        return Err(Error::Aborted(format!("task {task} rolls back")));
                    }
                    Ok(mine)
                })
                .await
            })
        })
        .collect();
    let mut committed = 0;
    for (task, handle) in tasks.into_iter().enumerate() {
        match handle.await? {
            Ok(mine) => {
                assert_eq!(mine, 10, "task {task} saw another transaction's rows");
                committed += 1;
            }
            Err(Error::Aborted(_)) if task % 4 == 0 => {}
            Err(e) => return Err(e.into()),
        }
    }
    assert_eq!(committed, 36);
    assert_eq!(count(&t.db).await?, 36 * 10);
    Ok(())
}

#[tokio::test]
async fn the_same_file_opened_twice_is_one_instance() -> TestResult {
    let t = TestDb::duckdb().await?;
    // Another spelling of the same path.
    let dotted = t.dir.path().join(".").join("exposures.duckdb");
    let again = Database::open(&dotted)?;
    assert!(matches!(
        (again.instance(), t.db.instance()),
        (Some(a), Some(b)) if a.same_instance(b)
    ));

    // Writes through both handles land in one database, nothing is lost
    // when the handles are dropped and the file reopened.
    event("via-first", "2025-01-01T00:00:00Z")
        .into_active_model()
        .insert(&t.db)
        .await?;
    event("via-second", "2025-01-01T00:00:00Z")
        .into_active_model()
        .insert(&again)
        .await?;
    assert_eq!(count(&again).await?, 2);
    let path = t.path.clone();
    let TestDb { db, dir, .. } = t;
    drop(db);
    drop(again);
    let reopened = Database::open(&path)?;
    assert_eq!(count(&reopened).await?, 2);
    drop(dir);
    Ok(())
}

#[tokio::test]
async fn an_unusable_directory_is_a_clear_open_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x")?;
    let result = Database::open(file.join("sub").join("exposures.duckdb"));
    match result {
        Err(Error::Open { path, reason }) => {
            assert!(path.ends_with("sub/exposures.duckdb"));
            assert!(reason.contains("cannot create directory"), "{reason}");
        }
        other => panic!("expected an open error, got {other:?}"),
    }
    Ok(())
}

/// Filter helper for readability above.
trait FilterOffice {
    fn filter_office(self, office: &str) -> Self;
}

impl FilterOffice for sea_orm::Select<ExposureEvents> {
    fn filter_office(self, office: &str) -> Self {
        use sea_orm::{ColumnTrait, QueryFilter};
        self.filter(exposure_store::entity::exposure_event::Column::OfficeId.eq(office))
    }
}
