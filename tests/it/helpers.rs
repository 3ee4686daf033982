//! Test plumbing: a fresh migrated database per test, and event builders.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use exposure_store::Database;
use exposure_store::entity::exposure_event;
use exposure_store::entity::{EventAction, Severity, Status};

/// Test functions return this instead of unwrapping.
pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A migrated database in its own temporary directory (removed on drop).
pub struct TestDb {
    pub db: Database,
    pub path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new() -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("exposures.duckdb");
        let db = Database::open(&path)?;
        db.init().await?;
        Ok(Self { db, path, dir })
    }
}

pub fn ts(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("bad test timestamp {rfc3339}: {e}"))
}

/// A fully populated event; tests override what they exercise.
pub fn event(event_id: &str, timestamp: &str) -> exposure_event::Model {
    exposure_event::Model {
        event_id: event_id.to_owned(),
        timestamp: ts(timestamp),
        office_id: "office-001".to_owned(),
        asset_id: "asset-001-00001".to_owned(),
        exposure_id: "EXP-0001".to_owned(),
        exposure_class: "open_port".to_owned(),
        event_action: EventAction::Opened,
        status: Status::Open,
        severity: Severity::Medium,
        risk_score: 6.4,
        hostname: Some("ws-001-00001.corp.example".to_owned()),
        asset_ip: Some("10.1.0.1".to_owned()),
        dst_ip: Some("10.1.0.1".to_owned()),
        dst_port: Some(443),
        protocol: Some("tcp".to_owned()),
        service_name: Some("https".to_owned()),
        service_product: Some("nginx".to_owned()),
        service_version: Some("1.25.3".to_owned()),
        scan_run_id: Some("run-1".to_owned()),
        raw_payload_json: Some(serde_json::json!({"scanner": "agent", "seq": 0})),
    }
}

/// An input event with the given identity; details filled in.
pub fn input(
    event_id: &str,
    timestamp: &str,
    office: &str,
    exposure: &str,
) -> exposure_store::ExposureEvent {
    let m = event(event_id, timestamp);
    exposure_store::ExposureEvent {
        event_id: m.event_id,
        timestamp: m.timestamp,
        office_id: office.to_owned(),
        asset_id: m.asset_id,
        exposure_id: exposure.to_owned(),
        exposure_class: m.exposure_class,
        event_action: m.event_action,
        status: m.status,
        severity: m.severity,
        risk_score: m.risk_score,
        hostname: m.hostname,
        asset_ip: m.asset_ip,
        dst_ip: m.dst_ip,
        dst_port: m.dst_port,
        protocol: m.protocol,
        service_name: m.service_name,
        service_product: m.service_product,
        service_version: m.service_version,
        scan_run_id: m.scan_run_id,
        raw_payload_json: m.raw_payload_json,
    }
}

/// Ingests `events` in one unit of work with the given chunk size.
pub async fn ingest(
    db: &Database,
    chunk_size: usize,
    events: &[exposure_store::ExposureEvent],
) -> Result<exposure_store::IngestStats, exposure_store::Error> {
    let repo = exposure_store::ExposureRepository::with_chunk_size(chunk_size);
    db.transaction(async |s| repo.ingest_events(s, events).await)
        .await
}
