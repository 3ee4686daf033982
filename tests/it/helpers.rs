//! Test plumbing: a fresh migrated database per test on either engine, and
//! event builders.
//!
//! PostgreSQL tests run against the server named by `TEST_DATABASE_URL`,
//! which `scripts/with-postgres` starts (on loopback, in a temporary
//! directory) for the length of the suite; each test gets a database of
//! its own on it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use exposure_store::Database;
use exposure_store::entity::{EventAction, Severity, Status};
use exposure_store::entity::{exposure_current, exposure_event};

/// Test functions return this instead of unwrapping.
pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    DuckDb,
    Postgres,
}

/// The test PostgreSQL server's URL.
pub fn server_url() -> TestResult<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            "TEST_DATABASE_URL is not set: run the suite through scripts/with-postgres, \
             which starts a throwaway PostgreSQL server"
                .into()
        })
}

/// `url` pointing at database `name` instead.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Creates an empty database on the test server; returns its URL.
pub async fn postgres_database() -> TestResult<String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let server = server_url()?;
    let name = format!(
        "test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    );
    let mut options = sea_orm::ConnectOptions::new(&server);
    options.max_connections(1).sqlx_logging(false);
    let admin = sea_orm::Database::connect(options).await?;
    // An identifier we generated (CREATE DATABASE takes no bound values).
    sea_orm::ConnectionTrait::execute_unprepared(&admin, &format!("CREATE DATABASE {name}"))
        .await?;
    admin.close().await?;
    Ok(with_database(&server, &name))
}

/// A migrated database of its own: a DuckDB file in a temporary directory
/// (removed on drop), or a new database on the test PostgreSQL server.
pub struct TestDb {
    pub db: Database,
    /// The DuckDB file (in `dir`; unused on PostgreSQL).
    pub path: PathBuf,
    /// The PostgreSQL URL (`None` on DuckDB).
    pub url: Option<String>,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("exposures.duckdb");
        let (db, url) = match backend {
            Backend::DuckDb => (Database::open(&path)?, None),
            Backend::Postgres => {
                let url = postgres_database().await?;
                (Database::connect(&url).await?, Some(url))
            }
        };
        db.init().await?;
        Ok(Self { db, path, url, dir })
    }

    /// A DuckDB test database (for what only DuckDB has: files, locks).
    pub async fn duckdb() -> TestResult<Self> {
        Self::new(Backend::DuckDb).await
    }

    /// The CLI's options selecting this database.
    pub fn cli_args(&self) -> Vec<String> {
        match &self.url {
            Some(url) => vec!["--database-url".to_owned(), url.clone()],
            None => vec!["--db".to_owned(), self.path.display().to_string()],
        }
    }
}

/// Opens a test database again (after a CLI process used it).
pub async fn reopen(path: &std::path::Path, url: Option<&str>) -> TestResult<Database> {
    Ok(match url {
        Some(url) => Database::connect(url).await?,
        None => Database::open(path)?,
    })
}

pub fn ts(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&Utc))
        .expect("a test timestamp is RFC 3339")
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
        raw_payload_json: Some(r#"{"scanner": "agent", "seq": 0}"#.to_owned()),
    }
}

/// An input event with the given identity; details filled in.
pub fn input(
    event_id: &str,
    timestamp: &str,
    office: &str,
    exposure: &str,
) -> exposure_store::ExposureEvent {
    exposure_store::ExposureEvent {
        office_id: office.to_owned(),
        exposure_id: exposure.to_owned(),
        ..to_input(event(event_id, timestamp))
    }
}

/// A stored event as input (its payload is valid JSON: the helpers write
/// only such payloads).
pub fn to_input(stored: exposure_event::Model) -> exposure_store::ExposureEvent {
    exposure_store::ExposureEvent::try_from(stored).expect("a test payload is JSON")
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

/// Writes `events` generated events (`exposure-store generate`) over
/// `exposures` exposures and `offices` offices to `path`.
pub fn generated_file(
    path: &std::path::Path,
    events: u64,
    exposures: u64,
    offices: u64,
    seed: u64,
) -> TestResult<PathBuf> {
    let options = exposure_store::GenerateOptions {
        events,
        exposures,
        offices,
        seed,
    };
    exposure_store::generate(options, std::fs::File::create(path)?)?;
    Ok(path.to_path_buf())
}

/// A current-state row for `(office, exposure)` (for tests that need a row
/// whose key only the primary key of `exposures_current` guards: on DuckDB
/// the audit log has no index, see migration 6).
pub fn current_row(office: &str, exposure: &str) -> exposure_current::Model {
    let at = ts("2025-01-01T00:00:00Z");
    exposure_current::Model {
        office_id: office.to_owned(),
        exposure_id: exposure.to_owned(),
        exposure_class: "open_port".to_owned(),
        status: Status::Open,
        severity: Severity::Medium,
        event_action: EventAction::Opened,
        risk_score: 5.0,
        first_seen: at,
        last_seen: at,
        asset_id: "asset-1".to_owned(),
        hostname: None,
        asset_ip: None,
        dst_ip: None,
        dst_port: None,
        protocol: None,
        service_name: None,
        service_product: None,
        service_version: None,
        last_event_id: Some("e-1".to_owned()),
        hostname_seen_at: None,
        hostname_event_id: None,
        asset_ip_seen_at: None,
        asset_ip_event_id: None,
        dst_ip_seen_at: None,
        dst_ip_event_id: None,
        dst_port_seen_at: None,
        dst_port_event_id: None,
        protocol_seen_at: None,
        protocol_event_id: None,
        service_name_seen_at: None,
        service_name_event_id: None,
        service_product_seen_at: None,
        service_product_event_id: None,
        service_version_seen_at: None,
        service_version_event_id: None,
    }
}
