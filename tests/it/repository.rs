//! The repository's rules, one example each, read back with plain Sea-ORM.

use exposure_store::entity::prelude::*;
use exposure_store::entity::{exposure_current, exposure_event};
use exposure_store::{Error, ExposureEvent, ExposureRepository, IngestStats};
use exposure_store::{ExposureFilter, Page, QuarantineRecord};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

use rstest::rstest;

use crate::helpers::{Backend, TestDb, TestResult, ingest, input, ts};

async fn current(t: &TestDb, office: &str, exposure: &str) -> TestResult<exposure_current::Model> {
    Ok(
        ExposuresCurrent::find_by_id((office.to_owned(), exposure.to_owned()))
            .one(&t.db)
            .await?
            .ok_or("no current row")?,
    )
}

fn stats(
    events_inserted: u64,
    events_skipped: u64,
    exposures_inserted: u64,
    exposures_updated: u64,
) -> IngestStats {
    IngestStats {
        events_inserted,
        events_skipped,
        exposures_inserted,
        exposures_updated,
    }
}

#[rstest]
#[tokio::test]
async fn ingesting_the_same_events_twice_changes_nothing_the_second_time(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let events: Vec<ExposureEvent> = (0..10)
        .map(|i| {
            input(
                &format!("e{i}"),
                &format!("2025-01-01T00:00:{i:02}Z"),
                "o1",
                &format!("x{}", i % 4),
            )
        })
        .collect();
    assert_eq!(ingest(&t.db, 3, &events).await?, stats(10, 0, 4, 0));
    let before_events = ExposureEvents::find()
        .order_by_asc(exposure_event::Column::EventId)
        .all(&t.db)
        .await?;
    let before_current = ExposuresCurrent::find()
        .order_by_asc(exposure_current::Column::ExposureId)
        .all(&t.db)
        .await?;
    assert_eq!(ingest(&t.db, 3, &events).await?, stats(0, 10, 0, 0));
    let after_events = ExposureEvents::find()
        .order_by_asc(exposure_event::Column::EventId)
        .all(&t.db)
        .await?;
    let after_current = ExposuresCurrent::find()
        .order_by_asc(exposure_current::Column::ExposureId)
        .all(&t.db)
        .await?;
    assert_eq!(before_events, after_events);
    assert_eq!(before_current, after_current);
    Ok(())
}

#[rstest]
#[tokio::test]
async fn a_repeated_event_id_is_skipped_and_does_not_touch_the_current_state(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let first = input("same-id", "2025-01-01T00:00:00Z", "o1", "x1");
    let mut imposter = input("same-id", "2025-06-01T00:00:00Z", "o1", "x1");
    imposter.status = Status::Closed;
    imposter.hostname = Some("imposter".to_owned());
    // Within one input, and within one chunk.
    assert_eq!(
        ingest(&t.db, 10, &[first.clone(), imposter.clone()]).await?,
        stats(1, 1, 1, 0)
    );
    // Again in a later call.
    assert_eq!(ingest(&t.db, 10, &[imposter]).await?, stats(0, 1, 0, 0));
    let row = current(&t, "o1", "x1").await?;
    assert_eq!(row.status, Status::Open);
    assert_eq!(row.last_seen, first.timestamp);
    assert_eq!(row.hostname, first.hostname);
    let stored = ExposureEvents::find_by_id("same-id".to_owned())
        .one(&t.db)
        .await?;
    assert_eq!(stored.map(|e| e.timestamp), Some(first.timestamp));
    Ok(())
}

#[rstest]
#[tokio::test]
async fn first_seen_and_last_seen_never_move_the_wrong_way(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    ingest(&t.db, 10, &[input("b", "2025-01-10T00:00:00Z", "o1", "x1")]).await?;
    ingest(
        &t.db,
        10,
        &[input("c", "2025-01-20T00:00:00+05:30", "o1", "x1")],
    )
    .await?;
    ingest(
        &t.db,
        10,
        &[input("a", "2025-01-01T00:00:00-08:00", "o1", "x1")],
    )
    .await?;
    ingest(&t.db, 10, &[input("m", "2025-01-15T00:00:00Z", "o1", "x1")]).await?;
    let row = current(&t, "o1", "x1").await?;
    assert_eq!(row.first_seen, ts("2025-01-01T08:00:00Z"));
    assert_eq!(row.last_seen, ts("2025-01-19T18:30:00Z"));
    Ok(())
}

#[rstest]
#[tokio::test]
async fn a_late_file_does_not_reopen_a_closed_exposure(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let opened = input("1", "2025-01-01T00:00:00Z", "o1", "x1");
    let mut closed = input("3", "2025-01-03T00:00:00Z", "o1", "x1");
    closed.status = Status::Closed;
    closed.event_action = EventAction::Closed;
    closed.severity = Severity::Low;
    closed.risk_score = 0.5;
    ingest(&t.db, 500, &[opened, closed]).await?;

    // A scanner that was offline uploads its file from Jan 2nd.
    let mut late = input("2", "2025-01-02T00:00:00Z", "o1", "x1");
    late.status = Status::Open;
    late.event_action = EventAction::Updated;
    late.severity = Severity::Critical;
    late.risk_score = 9.9;
    assert_eq!(ingest(&t.db, 500, &[late]).await?, stats(1, 0, 0, 1));

    let row = current(&t, "o1", "x1").await?;
    assert_eq!(
        (row.status, row.event_action, row.severity, row.risk_score),
        (Status::Closed, EventAction::Closed, Severity::Low, 0.5)
    );
    assert_eq!(
        (row.first_seen, row.last_seen),
        (ts("2025-01-01T00:00:00Z"), ts("2025-01-03T00:00:00Z"))
    );
    // The late event is still in the audit log.
    assert_eq!(ExposureEvents::find().count(&t.db).await?, 3);
    Ok(())
}

#[rstest]
#[tokio::test]
async fn optional_fields_are_coalesce_preserved(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let mut e1 = input("1", "2025-01-01T00:00:00Z", "o1", "x1");
    e1.hostname = Some("h1".to_owned());
    e1.service_version = None;
    ingest(&t.db, 10, &[e1]).await?;

    // Newer with NULL hostname keeps it; newer non-NULL version replaces NULL.
    let mut e2 = input("2", "2025-01-02T00:00:00Z", "o1", "x1");
    e2.hostname = None;
    e2.service_version = Some("2.0".to_owned());
    e2.dst_port = Some(8443);
    ingest(&t.db, 10, &[e2]).await?;
    let row = current(&t, "o1", "x1").await?;
    assert_eq!(row.hostname.as_deref(), Some("h1"));
    assert_eq!(row.service_version.as_deref(), Some("2.0"));
    assert_eq!(row.dst_port, Some(8443));

    // An older late event does not overwrite what newer events reported,
    // but gives what no newer event has.
    let mut e3 = input("3", "2024-12-31T00:00:00Z", "o1", "x1");
    e3.hostname = Some("old-host".to_owned());
    e3.dst_port = Some(1);
    e3.service_product = Some("late-product".to_owned());
    // A newer event that reports no details at all keeps every one.
    ingest(
        &t.db,
        10,
        &[without_details(input(
            "4",
            "2025-01-03T00:00:00Z",
            "o1",
            "x1",
        ))],
    )
    .await?;
    // A key whose product was never reported.
    let mut no_product = input("5", "2025-01-01T00:00:00Z", "o1", "x2");
    no_product.service_product = None;
    ingest(&t.db, 10, &[no_product]).await?;
    let mut late_fill = e3.clone();
    late_fill.event_id = "6".to_owned();
    late_fill.exposure_id = "x2".to_owned();
    ingest(&t.db, 10, &[e3, late_fill]).await?;

    let row = current(&t, "o1", "x1").await?;
    assert_eq!(row.hostname.as_deref(), Some("h1"));
    assert_eq!(row.dst_port, Some(8443));
    assert_eq!(row.service_product.as_deref(), Some("nginx"));
    let x2 = current(&t, "o1", "x2").await?;
    assert_eq!(
        x2.service_product.as_deref(),
        Some("late-product"),
        "the late event fills a NULL"
    );
    assert_eq!(x2.dst_port, Some(443), "but does not overwrite a value");
    assert_eq!(x2.last_seen, ts("2025-01-01T00:00:00Z"));
    Ok(())
}

fn without_details(mut e: ExposureEvent) -> ExposureEvent {
    e.hostname = None;
    e.asset_ip = None;
    e.dst_ip = None;
    e.dst_port = None;
    e.protocol = None;
    e.service_name = None;
    e.service_product = None;
    e.service_version = None;
    e
}

#[rstest]
#[tokio::test]
async fn each_key_counts_once_per_call_whatever_the_chunking(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    ingest(
        &t.db,
        10,
        &[input("seed", "2025-01-01T00:00:00Z", "o1", "old")],
    )
    .await?;
    let events: Vec<ExposureEvent> = (0..12)
        .map(|i| {
            let key = if i % 3 == 0 {
                "old"
            } else if i % 3 == 1 {
                "new-a"
            } else {
                "new-b"
            };
            input(
                &format!("e{i}"),
                &format!("2025-01-02T00:00:{i:02}Z"),
                "o1",
                key,
            )
        })
        .collect();
    for chunk_size in [1, 2, 5, 500] {
        let t2 = TestDb::new(backend).await?;
        ingest(
            &t2.db,
            10,
            &[input("seed", "2025-01-01T00:00:00Z", "o1", "old")],
        )
        .await?;
        assert_eq!(
            ingest(&t2.db, chunk_size, &events).await?,
            stats(12, 0, 2, 1),
            "chunk size {chunk_size}"
        );
    }
    assert_eq!(ingest(&t.db, 4, &events).await?, stats(12, 0, 2, 1));
    Ok(())
}

#[rstest]
#[tokio::test]
async fn the_newest_event_wins_ties_go_to_the_greater_id(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let mut a = input("a", "2025-01-01T00:00:00Z", "o1", "x1");
    a.status = Status::Mitigated;
    let mut b = input("b", "2025-01-01T00:00:00Z", "o1", "x1");
    b.status = Status::Accepted;
    let mut older = input("c", "2024-01-01T00:00:00Z", "o1", "x1");
    older.status = Status::Closed;
    // Input order does not matter: "b" > "a".
    ingest(&t.db, 500, &[b, a, older]).await?;
    assert_eq!(current(&t, "o1", "x1").await?.status, Status::Accepted);
    Ok(())
}

#[rstest]
#[tokio::test]
async fn an_error_anywhere_leaves_both_tables_as_they_were(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    ingest(
        &t.db,
        10,
        &[input("kept", "2025-01-01T00:00:00Z", "o1", "x1")],
    )
    .await?;
    let repo = ExposureRepository::with_chunk_size(2);
    let batch: Vec<ExposureEvent> = (0..5)
        .map(|i| {
            input(
                &format!("n{i}"),
                "2025-02-01T00:00:00Z",
                "o2",
                &format!("y{i}"),
            )
        })
        .collect();
    let result =
        t.db.transaction(async |s| -> Result<IngestStats, Error> {
            repo.ingest_events(s, &batch[..3]).await?;
            // Something breaks half-way: the current-state table vanishes.
            s.execute_unprepared("DROP TABLE exposures_current").await?;
            repo.ingest_events(s, &batch[3..]).await
        })
        .await;
    assert!(result.is_err());
    assert_eq!(ExposureEvents::find().count(&t.db).await?, 1);
    assert_eq!(ExposuresCurrent::find().count(&t.db).await?, 1);
    Ok(())
}

#[rstest]
#[tokio::test]
async fn repository_parts_work_on_their_own(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let repo = ExposureRepository::with_chunk_size(2);
    let events = vec![
        input("a", "2025-01-01T00:00:00Z", "o1", "x1"),
        input("a", "2025-01-01T00:00:00Z", "o1", "x1"),
        input("b", "2025-01-02T00:00:00Z", "o1", "x2"),
    ];
    let inserted =
        t.db.transaction(async |s| repo.batch_insert_events(s, &events).await)
            .await?;
    assert_eq!(
        (
            inserted.inserted,
            inserted.skipped,
            inserted.new_positions.clone()
        ),
        (2, 1, vec![0, 2])
    );
    assert_eq!(
        ExposuresCurrent::find().count(&t.db).await?,
        0,
        "the log alone does not touch the state"
    );
    let upserted =
        t.db.transaction(async |s| repo.batch_upsert_current(s, &events).await)
            .await?;
    assert_eq!((upserted.inserted, upserted.updated), (2, 0));
    assert_eq!(ExposuresCurrent::find().count(&t.db).await?, 2);
    Ok(())
}

#[rstest]
#[tokio::test]
async fn dashboard_queries_filter_order_paginate_and_count(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let mut events = Vec::new();
    for i in 0..30_u32 {
        let mut e = input(
            &format!("e{i}"),
            "2025-01-01T00:00:00Z",
            &format!("office-{}", i % 3),
            &format!("x{i}"),
        );
        e.timestamp += chrono::Duration::hours(i64::from(i));
        e.severity = [Severity::Low, Severity::High, Severity::Critical][(i % 3) as usize];
        e.status = if i % 5 == 0 {
            Status::Closed
        } else {
            Status::Open
        };
        e.exposure_class = if i % 2 == 0 {
            "open_port".to_owned()
        } else {
            "weak_tls".to_owned()
        };
        events.push(e);
    }
    ingest(&t.db, 7, &events).await?;
    let repo = ExposureRepository::default();

    let filter = ExposureFilter {
        office_id: Some("office-1".to_owned()),
        status: Some(Status::Open),
        ..Default::default()
    };
    let rows = repo
        .current_exposures(
            &t.db,
            &filter,
            Page {
                offset: 0,
                limit: 100,
            },
        )
        .await?;
    let ids: Vec<&str> = rows.iter().map(|r| r.exposure_id.as_str()).collect();
    assert_eq!(
        ids,
        ["x28", "x22", "x19", "x16", "x13", "x7", "x4", "x1"],
        "newest first"
    );
    let page = repo
        .current_exposures(
            &t.db,
            &filter,
            Page {
                offset: 2,
                limit: 3,
            },
        )
        .await?;
    assert_eq!(
        page.iter()
            .map(|r| r.exposure_id.as_str())
            .collect::<Vec<_>>(),
        ["x19", "x16", "x13"]
    );

    let since = ExposureFilter {
        severity: Some(Severity::Critical),
        exposure_class: Some("open_port".to_owned()),
        last_seen_from: Some(ts("2025-01-01T20:00:00Z")),
        ..Default::default()
    };
    let rows = repo
        .current_exposures(&t.db, &since, Page::default())
        .await?;
    assert_eq!(
        rows.iter()
            .map(|r| r.exposure_id.as_str())
            .collect::<Vec<_>>(),
        ["x26", "x20"]
    );

    let counts = repo.exposure_counts(&t.db).await?;
    assert_eq!(
        counts.by_office,
        [
            ("office-0".to_owned(), 10),
            ("office-1".to_owned(), 10),
            ("office-2".to_owned(), 10)
        ]
    );
    assert_eq!(
        counts.by_severity,
        [
            (Severity::Critical, 10),
            (Severity::High, 10),
            (Severity::Low, 10)
        ]
    );
    assert_eq!(counts.by_status, [(Status::Open, 24), (Status::Closed, 6)]);
    let totals = repo.totals(&t.db).await?;
    assert_eq!(
        (totals.events, totals.exposures, totals.quarantined_files),
        (30, 30, 0)
    );

    // Plain Sea-ORM reads the same state.
    let open_critical = ExposuresCurrent::find()
        .filter(exposure_current::Column::Severity.eq(Severity::Critical))
        .filter(exposure_current::Column::Status.eq(Status::Open))
        .count(&t.db)
        .await?;
    assert_eq!(open_critical, 8);
    Ok(())
}

#[rstest]
#[tokio::test]
async fn quarantine_records_and_lists_files(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let repo = ExposureRepository::default();
    for (name, kind) in [("a.ndjson", "invalid_json"), ("b.ndjson", "io_error")] {
        repo.quarantine_file(
            &t.db,
            QuarantineRecord {
                filename: name.to_owned(),
                error_type: kind.to_owned(),
                error_message: format!("{kind} in {name}"),
                error_details_json: Some(serde_json::json!({"line": 3, "field": null})),
            },
        )
        .await?;
    }
    let listed = repo.quarantined_files(&t.db).await?;
    assert_eq!(
        listed
            .iter()
            .map(|q| q.filename.as_str())
            .collect::<Vec<_>>(),
        ["a.ndjson", "b.ndjson"]
    );
    assert_eq!(
        listed[0].error_details_json,
        Some(serde_json::json!({"line": 3, "field": null}))
    );
    Ok(())
}

#[test]
fn stats_add_up_across_calls() {
    let mut total = stats(1, 2, 3, 4);
    total += stats(10, 20, 30, 40);
    assert_eq!(total, stats(11, 22, 33, 44));
    assert_eq!(stats(1, 1, 1, 1) + stats(1, 0, 0, 1), stats(2, 1, 1, 2));
}

#[rstest]
#[tokio::test]
async fn an_ingestion_dropped_without_finish_cannot_be_committed(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let repo = ExposureRepository::default();
    let events = [input("a", "2025-01-01T00:00:00Z", "o1", "x1")];
    let result =
        t.db.transaction(async |s| -> Result<(), Error> {
            let mut ingestion = repo.ingestion(s).await?;
            ingestion.push(&events).await?;
            drop(ingestion); // forgot finish()
            Ok(())
        })
        .await;
    match result {
        // The reason as given, in the same words on both engines.
        Err(Error::Aborted(message)) => assert!(
            message
                .starts_with("transaction rolled back: an ingestion was dropped without finish()"),
            "{message}"
        ),
        other => panic!("the unit of work was committed: {other:?}"),
    }
    assert_eq!(ExposureEvents::find().count(&t.db).await?, 0);
    Ok(())
}
