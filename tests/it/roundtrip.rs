//! Every column type round-trips exactly through the DuckDB adapter and
//! through PostgreSQL, and ordinary Sea-ORM code works on both.

use chrono::{DateTime, FixedOffset, Utc};
use exposure_store::Error;
use exposure_store::entity::prelude::*;
use exposure_store::entity::{exposure_current, exposure_event, quarantined_file};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
};

use rstest::rstest;

use crate::helpers::{Backend, TestDb, TestResult, current_row, event, ts};

#[rstest]
#[tokio::test]
async fn every_event_column_round_trips(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let mut full = event("e-full", "2025-01-05T16:00:03.161-08:00");
    full.risk_score = 7.3; // 32-bit floats would read back as 7.300000190734863
    full.hostname = Some("hôte-😀-\u{200f}שלום-e\u{301}".to_owned());
    // The payload's text as sent: spacing, key order, digits beyond 64
    // bits and beyond a double, escapes.
    full.raw_payload_json = Some(
        r#"{"scanner": "agent",  "plugin_id": 97035, "tags": ["a", "b"], "big": 123456789012345678901234567890, "huge": 1e400, "score": 0.20293084081576074, "nested": {"deep": [1, 2.5, null, true, {"x": "é\u00e9\u0000"}]}}"#.to_owned(),
    );
    let mut sparse = event("e-sparse", "2025-01-06T00:00:00Z");
    sparse.hostname = None;
    sparse.asset_ip = None;
    sparse.dst_ip = None;
    sparse.dst_port = None;
    sparse.protocol = None;
    sparse.service_name = None;
    sparse.service_product = None;
    sparse.service_version = None;
    sparse.scan_run_id = None;
    sparse.raw_payload_json = None;
    let mut scalar_json = event("e-json-array", "2025-01-06T00:00:00.000001Z");
    scalar_json.raw_payload_json = Some(r#"["just","an","array",1]"#.to_owned());

    for model in [&full, &sparse, &scalar_json] {
        model.clone().into_active_model().insert(&t.db).await?;
    }
    for model in [&full, &sparse, &scalar_json] {
        let back = ExposureEvents::find_by_id(model.event_id.clone())
            .one(&t.db)
            .await?;
        assert_eq!(
            back.as_ref(),
            Some(model),
            "{} changed on its way through {backend:?}",
            model.event_id
        );
    }
    // The instant is what is stored: 16:00:03.161-08:00 is 00:00:03.161Z.
    let back = ExposureEvents::find_by_id("e-full".to_owned())
        .one(&t.db)
        .await?;
    assert_eq!(
        back.map(|m| m.timestamp),
        Some(ts("2025-01-06T00:00:03.161Z"))
    );
    Ok(())
}

#[rstest]
#[tokio::test]
async fn a_timestamp_bound_with_an_offset_is_the_same_instant(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let kolkata: DateTime<FixedOffset> =
        DateTime::parse_from_rfc3339("2025-03-01T05:30:00.123456+05:30")?;
    let e = event("e-offset", "2000-01-01T00:00:00Z");
    // Bind the offset timestamp itself (not a pre-converted UTC value).
    t.db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        r#"INSERT INTO exposure_events (event_id, "timestamp", office_id, asset_id, exposure_id,
           exposure_class, event_action, status, severity, risk_score)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
        [
            e.event_id.clone().into(),
            kolkata.into(),
            e.office_id.clone().into(),
            e.asset_id.clone().into(),
            e.exposure_id.clone().into(),
            e.exposure_class.clone().into(),
            "opened".into(),
            "open".into(),
            "high".into(),
            0.1_f64.into(),
        ],
    ))
    .await?;
    let back = ExposureEvents::find_by_id("e-offset".to_owned())
        .one(&t.db)
        .await?;
    let back = back.ok_or("row missing")?;
    assert_eq!(back.timestamp, ts("2025-03-01T00:00:00.123456Z"));
    assert_eq!(back.timestamp, kolkata.with_timezone(&Utc));
    assert_eq!(back.severity, Severity::High);
    assert!(back.hostname.is_none());
    assert_eq!(back.risk_score, 0.1);
    Ok(())
}

#[rstest]
#[tokio::test]
async fn insert_many_filter_order_paginate_count(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let models: Vec<exposure_event::ActiveModel> = (0..25)
        .map(|i| {
            let mut e = event(&format!("e-{i:02}"), "2025-01-01T00:00:00Z");
            e.timestamp += chrono::Duration::minutes(i);
            e.severity = if i % 5 == 0 {
                Severity::Critical
            } else {
                Severity::Low
            };
            e.office_id = format!("office-{:03}", i % 3);
            e.into_active_model()
        })
        .collect();
    ExposureEvents::insert_many(models).exec(&t.db).await?;

    assert_eq!(ExposureEvents::find().count(&t.db).await?, 25);
    let critical = ExposureEvents::find()
        .filter(exposure_event::Column::Severity.eq(Severity::Critical))
        .order_by_desc(exposure_event::Column::Timestamp)
        .all(&t.db)
        .await?;
    let ids: Vec<&str> = critical.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["e-20", "e-15", "e-10", "e-05", "e-00"]);

    let pages = ExposureEvents::find()
        .filter(exposure_event::Column::OfficeId.eq("office-001"))
        .order_by_asc(exposure_event::Column::EventId)
        .paginate(&t.db, 3);
    assert_eq!(pages.num_items().await?, 8);
    assert_eq!(pages.num_pages().await?, 3);
    let second = pages.fetch_page(1).await?;
    let ids: Vec<&str> = second.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["e-10", "e-13", "e-16"]);
    Ok(())
}

#[rstest]
#[tokio::test]
async fn aggregates_decode_to_plain_rust_types(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let mut rows = Vec::new();
    for (i, port) in [(0, 80), (1, 443), (2, 8443)] {
        let mut e = event(&format!("agg-{i}"), "2025-01-01T00:00:00Z");
        e.dst_port = Some(port);
        e.risk_score = 1.5 * f64::from(i + 1);
        rows.push(e.into_active_model());
    }
    ExposureEvents::insert_many(rows).exec(&t.db).await?;

    // SUM(INTEGER) is a HUGEINT in DuckDB; it must decode as i64.
    let (sum, count, max_score): (i64, i64, f64) = ExposureEvents::find()
        .select_only()
        .column_as(exposure_event::Column::DstPort.sum(), "a_sum")
        .column_as(exposure_event::Column::EventId.count(), "b_count")
        .column_as(exposure_event::Column::RiskScore.max(), "c_max")
        .into_tuple()
        .one(&t.db)
        .await?
        .ok_or("no aggregate row")?;
    assert_eq!((sum, count, max_score), (80 + 443 + 8443, 3, 4.5));
    Ok(())
}

#[rstest]
#[tokio::test]
async fn current_state_and_quarantine_entities_round_trip(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    let current = exposure_current::Model {
        office_id: "office-007".to_owned(),
        exposure_id: "EXP-ac87f8505ae9".to_owned(),
        exposure_class: "default_credentials".to_owned(),
        status: Status::Mitigated,
        severity: Severity::Critical,
        event_action: EventAction::Updated,
        risk_score: 9.8,
        first_seen: ts("2024-12-31T23:59:59.999999Z"),
        last_seen: ts("2025-01-01T10:00:00+10:00"),
        asset_id: "asset-7".to_owned(),
        hostname: None,
        asset_ip: Some("10.7.0.1".to_owned()),
        dst_ip: None,
        dst_port: Some(22),
        protocol: Some("tcp".to_owned()),
        service_name: None,
        service_product: None,
        service_version: None,
        last_event_id: Some("évent-é".to_owned()),
        hostname_seen_at: None,
        hostname_event_id: None,
        asset_ip_seen_at: Some(ts("2024-12-31T23:59:59.999999Z")),
        asset_ip_event_id: Some("e-1".to_owned()),
        dst_ip_seen_at: None,
        dst_ip_event_id: None,
        dst_port_seen_at: Some(ts("2025-01-01T10:00:00+10:00")),
        dst_port_event_id: Some("évent-é".to_owned()),
        protocol_seen_at: Some(ts("2025-01-01T10:00:00+10:00")),
        protocol_event_id: Some("évent-é".to_owned()),
        service_name_seen_at: None,
        service_name_event_id: None,
        service_product_seen_at: None,
        service_product_event_id: None,
        service_version_seen_at: None,
        service_version_event_id: None,
    };
    current.clone().into_active_model().insert(&t.db).await?;
    let back =
        ExposuresCurrent::find_by_id(("office-007".to_owned(), "EXP-ac87f8505ae9".to_owned()))
            .one(&t.db)
            .await?;
    assert_eq!(back.as_ref(), Some(&current));

    // Update through an ActiveModel.
    let mut active = current.clone().into_active_model();
    active.status = ActiveValue::Set(Status::Closed);
    let updated = active.update(&t.db).await?;
    assert_eq!(updated.status, Status::Closed);

    // The quarantine id and timestamp come from the database.
    let before = Utc::now() - chrono::Duration::seconds(5);
    let q = quarantined_file::ActiveModel {
        filename: ActiveValue::Set("bad.ndjson".to_owned()),
        error_type: ActiveValue::Set("invalid_json".to_owned()),
        error_message: ActiveValue::Set("line 3: expected value".to_owned()),
        error_details_json: ActiveValue::Set(Some(serde_json::json!({"line": 3}))),
        ..Default::default()
    };
    let first = q.clone().insert(&t.db).await?;
    let second = q.insert(&t.db).await?;
    assert!(second.id > first.id, "ids are generated and increasing");
    assert!(first.quarantined_at >= before && first.quarantined_at <= Utc::now());
    assert_eq!(
        first.error_details_json,
        Some(serde_json::json!({"line": 3}))
    );
    Ok(())
}

#[rstest]
#[tokio::test]
async fn constraint_violations_are_distinguishable_and_carry_the_databases_message(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let t = TestDb::new(backend).await?;
    event("dup", "2025-01-01T00:00:00Z")
        .into_active_model()
        .insert(&t.db)
        .await?;
    current_row("o", "x")
        .into_active_model()
        .insert(&t.db)
        .await?;
    let again = current_row("o", "x")
        .into_active_model()
        .insert(&t.db)
        .await;
    let err = Error::from(again.err().ok_or("duplicate key accepted")?);
    match &err {
        Error::Constraint(message) => assert!(
            message.to_lowercase().contains("duplicate key"),
            "{message}"
        ),
        other => panic!("expected a constraint violation, got {other:?}"),
    }

    // The closed vocabularies are enforced by the database too.
    let bad =
        t.db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE exposure_events SET severity = $1",
            ["urgent".into()],
        ))
        .await;
    assert!(matches!(
        Error::from(bad.err().ok_or("invalid severity accepted")?),
        Error::Constraint(_)
    ));

    // Other errors are not constraint violations, and keep the database's
    // words.
    let syntax = t.db.execute_unprepared("SELEC 1").await;
    match Error::from(syntax.err().ok_or("bad SQL accepted")?) {
        Error::Database(e) => assert!(e.to_string().contains("syntax error"), "{e}"),
        other => panic!("expected a plain database error, got {other:?}"),
    }
    Ok(())
}
