//! The current state as a function of the audit log: late events, ties,
//! `verify`, `rebuild`, and the migration that adds provenance to a
//! database written before it.

use exposure_store::entity::prelude::*;
use exposure_store::entity::{Status, exposure_current, exposure_event};
use exposure_store::migration::commands::MigrateCommand;
use exposure_store::{Database, ExposureEvent, ExposureRepository};
use exposure_store::{DifferenceKind, VerifyReport};
use rstest::rstest;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::helpers::{Backend, TestDb, TestResult, ingest, input, ts};

async fn verify(db: &Database) -> exposure_store::Result<VerifyReport> {
    db.transaction(async |s| ExposureRepository::default().verify(s).await)
        .await
}

async fn current_rows(db: &Database) -> TestResult<Vec<exposure_current::Model>> {
    Ok(ExposuresCurrent::find()
        .order_by_asc(exposure_current::Column::OfficeId)
        .order_by_asc(exposure_current::Column::ExposureId)
        .all(db)
        .await?)
}

fn host(id: &str, at: &str, hostname: Option<&str>) -> ExposureEvent {
    let mut e = input(id, at, "o1", "x1");
    e.hostname = hostname.map(str::to_owned);
    e
}

/// The issue's example: `e1 (t1, hostname a)` and `e3 (t3, hostname NULL)`
/// arrive first, `e2 (t2, hostname c)` late. The hostname is `c`, as if
/// they had arrived in timestamp order, and comes with e2's provenance.
#[rstest]
#[tokio::test]
async fn a_late_event_gives_what_it_would_have_given_on_time(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let (e1, e2, e3) = (
        host("e1", "2025-01-01T00:00:01Z", Some("a")),
        host("e2", "2025-01-01T00:00:02Z", Some("c")),
        host("e3", "2025-01-01T00:00:03Z", None),
    );
    let late = TestDb::new(backend).await?;
    ingest(&late.db, 10, &[e1.clone(), e3.clone()]).await?;
    ingest(&late.db, 10, std::slice::from_ref(&e2)).await?;
    let on_time = TestDb::new(backend).await?;
    ingest(&on_time.db, 10, &[e1, e2, e3]).await?;

    let rows = current_rows(&late.db).await?;
    assert_eq!(rows, current_rows(&on_time.db).await?);
    let row = &rows[0];
    assert_eq!(row.hostname.as_deref(), Some("c"));
    assert_eq!(row.hostname_event_id.as_deref(), Some("e2"));
    assert_eq!(row.hostname_seen_at, Some(ts("2025-01-01T00:00:02Z")));
    assert_eq!(row.last_event_id.as_deref(), Some("e3"));
    assert_eq!(row.last_seen, ts("2025-01-01T00:00:03Z"));
    Ok(())
}

/// Two events at the same instant: the greater id, compared byte-wise
/// ("B" < "a"), wins whichever arrives last.
#[rstest]
#[tokio::test]
async fn timestamp_ties_go_to_the_byte_wise_greater_id(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let mut lower = host("B", "2025-01-01T00:00:00Z", Some("from-B"));
    lower.status = Status::Closed;
    let mut greater = host("a", "2025-01-01T00:00:00Z", Some("from-a"));
    greater.status = Status::Accepted;
    for order in [[&lower, &greater], [&greater, &lower]] {
        let t = TestDb::new(backend).await?;
        for e in order {
            ingest(&t.db, 10, std::slice::from_ref(e)).await?;
        }
        let row = &current_rows(&t.db).await?[0];
        assert_eq!(row.status, Status::Accepted);
        assert_eq!(row.hostname.as_deref(), Some("from-a"));
        assert_eq!(row.last_event_id.as_deref(), Some("a"));
    }
    Ok(())
}

/// 60 events over 24 keys, with timestamp ties, late events and NULLs.
fn sample_rows() -> Vec<exposure_event::Model> {
    (0..60)
        .map(|i| {
            let mut e = crate::helpers::event(
                &format!("ev-{i:03}"),
                &format!("2025-01-01T00:{:02}:{:02}Z", i % 7, i % 11),
            );
            e.office_id = format!("office-{}", i % 3);
            e.exposure_id = format!("EXP-{}", i % 8);
            if i % 4 == 0 {
                e.hostname = None;
            }
            if i % 5 == 0 {
                e.dst_port = None;
            }
            e.status = Status::ALL[i % Status::ALL.len()];
            e
        })
        .collect()
}

fn sample() -> Vec<ExposureEvent> {
    sample_rows()
        .into_iter()
        .map(crate::helpers::to_input)
        .collect()
}

/// `verify` finds nothing on an ingested database; after `exposures_current`
/// is tampered with (a value changed, a row deleted, a row added) it names
/// each key and column; `rebuild` restores the table exactly, and says what
/// it changed.
#[rstest]
#[tokio::test]
async fn rebuild_restores_a_tampered_current_state(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    ingest(&t.db, 7, &sample()).await?;
    let clean = verify(&t.db).await?;
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!((clean.events, clean.exposures), (60, 24));
    let before = current_rows(&t.db).await?;

    use exposure_current::Column as C;
    ExposuresCurrent::update_many()
        .col_expr(C::Hostname, Expr::value("tampered"))
        .col_expr(C::Status, Expr::value("closed"))
        .filter(C::OfficeId.eq("office-1"))
        .filter(C::ExposureId.eq("EXP-1"))
        .exec(&t.db)
        .await?;
    ExposuresCurrent::delete_many()
        .filter(C::OfficeId.eq("office-2"))
        .filter(C::ExposureId.eq("EXP-2"))
        .exec(&t.db)
        .await?;
    let mut stray = before[0].clone();
    stray.exposure_id = "EXP-no-events".to_owned();
    ExposuresCurrent::insert(exposure_current::ActiveModel::from(stray))
        .exec(&t.db)
        .await?;

    let report = verify(&t.db).await?;
    assert!(!report.is_clean());
    let found: Vec<_> = report
        .differences
        .iter()
        .map(|d| {
            (
                d.office_id.as_str(),
                d.exposure_id.as_str(),
                d.kind,
                d.columns.join(","),
            )
        })
        .collect();
    let status_changed = before
        .iter()
        .find(|r| r.office_id == "office-1" && r.exposure_id == "EXP-1")
        .is_some_and(|r| r.status != Status::Closed);
    let mut columns = vec!["status", "hostname"];
    if !status_changed {
        columns.remove(0);
    }
    assert_eq!(
        found,
        [
            (
                "office-0",
                "EXP-no-events",
                DifferenceKind::Unexpected,
                String::new()
            ),
            (
                "office-1",
                "EXP-1",
                DifferenceKind::Differs,
                columns.join(",")
            ),
            ("office-2", "EXP-2", DifferenceKind::Missing, String::new()),
        ]
    );

    let rebuilt =
        t.db.write_transaction(async |s| ExposureRepository::default().rebuild(s).await)
            .await?;
    assert_eq!(rebuilt.changed, report.differences);
    assert_eq!(current_rows(&t.db).await?, before);
    assert!(verify(&t.db).await?.is_clean());
    let again =
        t.db.write_transaction(async |s| ExposureRepository::default().rebuild(s).await)
            .await?;
    assert!(again.changed.is_empty(), "{again:?}");
    Ok(())
}

/// A database written before migration 5 (no provenance; its current state
/// from the old rule, where a late event only filled NULL details) gets
/// the provenance and the state of the log from `init`, and keeps taking
/// ingests.
#[rstest]
#[tokio::test]
async fn init_fills_the_provenance_of_a_database_from_before_it(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    use sea_orm::ConnectionTrait;
    let dir = tempfile::tempdir()?;
    let (db, reference) = match backend {
        Backend::DuckDb => (
            Database::open(dir.path().join("old.duckdb"))?,
            TestDb::new(backend).await?,
        ),
        Backend::Postgres => (
            Database::connect(&crate::helpers::postgres_database().await?).await?,
            TestDb::new(backend).await?,
        ),
    };
    db.migrate(MigrateCommand::Up { num: Some(4) }).await?;
    ExposureEvents::insert_many(
        sample_rows()
            .into_iter()
            .map(exposure_event::ActiveModel::from),
    )
    .exec(&db)
    .await?;
    let events = sample();
    // The old current state: one row per key, with stale values the old
    // rule could leave (here: every row says "open", host "stale").
    let insert = sea_orm::sea_query::Query::insert()
        .into_table(exposure_current::Entity)
        .columns([
            exposure_current::Column::OfficeId,
            exposure_current::Column::ExposureId,
            exposure_current::Column::ExposureClass,
            exposure_current::Column::Status,
            exposure_current::Column::Severity,
            exposure_current::Column::EventAction,
            exposure_current::Column::RiskScore,
            exposure_current::Column::FirstSeen,
            exposure_current::Column::LastSeen,
            exposure_current::Column::AssetId,
            exposure_current::Column::Hostname,
        ])
        .select_from(
            sea_orm::sea_query::Query::select()
                .columns([
                    exposure_current::Column::OfficeId,
                    exposure_current::Column::ExposureId,
                ])
                .expr(Expr::cust("MIN(exposure_class)"))
                .expr(Expr::value("open"))
                .expr(Expr::cust("MIN(severity)"))
                .expr(Expr::cust("MIN(event_action)"))
                .expr(Expr::cust("MIN(risk_score)"))
                .expr(Expr::cust(r#"MIN("timestamp")"#))
                .expr(Expr::cust(r#"MAX("timestamp")"#))
                .expr(Expr::cust("MIN(asset_id)"))
                .expr(Expr::value("stale"))
                .from(exposure_event::Entity)
                .group_by_columns([
                    exposure_current::Column::OfficeId,
                    exposure_current::Column::ExposureId,
                ])
                .to_owned(),
        )?
        .to_owned();
    db.execute(&insert).await?;

    db.init().await?;
    let report = verify(&db).await?;
    assert!(report.is_clean(), "{report:?}");
    ingest(&reference.db, 1_000, &events).await?;
    assert_eq!(current_rows(&db).await?, current_rows(&reference.db).await?);
    // And it goes on: a later event merges with the filled provenance.
    let later = [host("later", "2026-01-01T00:00:00Z", Some("later-host"))];
    ingest(&db, 10, &later).await?;
    ingest(&reference.db, 10, &later).await?;
    assert_eq!(current_rows(&db).await?, current_rows(&reference.db).await?);
    Ok(())
}

/// An event id stored by an earlier file and sent again with other values
/// (later, another host, closed), in a file with new events: the stored
/// event wins, the repeat is skipped and leaves no trace in the current
/// state, and the new events count. On DuckDB this is the path where the
/// repeat is found after it was appended (see the README's *How an event
/// id is stored once on DuckDB*); an event stored by another tool, without
/// `event_key`, is found as well.
#[rstest]
#[tokio::test]
async fn an_event_sent_again_with_other_values_is_skipped(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let e1 = host("e1", "2025-01-01T00:00:01Z", Some("a"));
    let e2 = host("e2", "2025-01-01T00:00:02Z", Some("b"));
    let mut changed = host("e1", "2025-01-01T00:00:09Z", Some("z"));
    changed.status = Status::Closed;
    let e3 = host("e3", "2025-01-01T00:00:03Z", None);
    // Stored by another tool, through the entity (so without `event_key` on
    // DuckDB), for another exposure; its current state is not written.
    let mut by_tool = crate::helpers::event("e4", "2025-01-01T00:00:04Z");
    by_tool.exposure_id = "x2".to_owned();

    let t = TestDb::new(backend).await?;
    ingest(&t.db, 10, &[e1.clone(), e2.clone()]).await?;
    ExposureEvents::insert(exposure_event::ActiveModel::from(by_tool.clone()))
        .exec(&t.db)
        .await?;
    let stats = ingest(
        &t.db,
        2,
        &[
            changed,
            e3.clone(),
            crate::helpers::to_input(by_tool),
            e3.clone(),
        ],
    )
    .await?;
    assert_eq!((stats.events_inserted, stats.events_skipped), (1, 3));

    let reference = TestDb::new(backend).await?;
    ingest(&reference.db, 10, &[e1, e2, e3]).await?;
    assert_eq!(
        current_rows(&t.db).await?,
        current_rows(&reference.db).await?
    );
    let row = &current_rows(&t.db).await?[0];
    assert_eq!(row.status, Status::Open);
    assert_eq!(row.hostname.as_deref(), Some("b"));
    assert_eq!(row.last_event_id.as_deref(), Some("e3"));
    assert_eq!(ExposureEvents::find().all(&t.db).await?.len(), 4);
    let report = verify(&t.db).await?;
    assert!(report.duplicate_event_ids.is_empty());
    assert_eq!(
        report
            .differences
            .iter()
            .map(|d| (d.exposure_id.as_str(), d.kind))
            .collect::<Vec<_>>(),
        [("x2", DifferenceKind::Missing)],
        "only the tool's event lacks its current state"
    );
    Ok(())
}

/// Units of work from `Database::transaction` (not `write_transaction`)
/// that ingest the same events at once, on DuckDB, where no index keeps an
/// id from being stored twice: each takes the write turn when it starts
/// ingesting, so every id is stored once and the state is the log's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_plain_units_of_work_store_each_id_once() -> TestResult {
    use sea_orm::PaginatorTrait;
    let t = TestDb::duckdb().await?;
    let events: Vec<ExposureEvent> = (0..300)
        .map(|i| {
            input(
                &format!("e{i}"),
                &format!("2025-01-01T00:{:02}:00Z", i % 60),
                "o1",
                &format!("x{}", i % 7),
            )
        })
        .collect();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (db, events) = (t.db.clone(), events.clone());
            tokio::spawn(async move {
                let repo = ExposureRepository::with_chunk_size(17);
                db.transaction(async |s| repo.ingest_events(s, &events).await)
                    .await
            })
        })
        .collect();
    let mut inserted = 0;
    for task in tasks {
        inserted += task.await??.events_inserted;
    }
    assert_eq!(inserted, 300);
    assert_eq!(ExposureEvents::find().count(&t.db).await?, 300);
    assert!(verify(&t.db).await?.is_clean());
    Ok(())
}
