//! Property tests: random event sequences against an in-memory model of the
//! repository's rules, on both engines.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use exposure_store::entity::prelude::*;
use exposure_store::entity::{exposure_current, exposure_event};
use exposure_store::{Database, ExposureEvent, ExposureRepository, IngestStats};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use rstest::rstest;
use sea_orm::{ConnectionTrait, EntityTrait, QueryOrder};

use crate::helpers::{Backend, TestResult};

type Key = (String, String);

/// The rules, applied one event at a time in input order.
#[derive(Default)]
struct Model {
    events: BTreeMap<String, ExposureEvent>,
    current: BTreeMap<Key, exposure_current::Model>,
}

impl Model {
    fn ingest(&mut self, input: &[ExposureEvent]) -> IngestStats {
        let mut stats = IngestStats::default();
        let mut touched: HashMap<Key, bool> = HashMap::new();
        for e in input {
            if self.events.contains_key(&e.event_id) {
                stats.events_skipped += 1;
                continue;
            }
            self.events.insert(e.event_id.clone(), e.clone());
            stats.events_inserted += 1;
            let key = (e.office_id.clone(), e.exposure_id.clone());
            let existed = self.current.contains_key(&key);
            touched.entry(key.clone()).or_insert(existed);
            match self.current.get_mut(&key) {
                None => {
                    self.current.insert(key, fresh(e));
                }
                Some(s) => apply(s, e),
            }
        }
        for existed in touched.values() {
            if *existed {
                stats.exposures_updated += 1;
            } else {
                stats.exposures_inserted += 1;
            }
        }
        stats
    }
}

fn fresh(e: &ExposureEvent) -> exposure_current::Model {
    exposure_current::Model {
        office_id: e.office_id.clone(),
        exposure_id: e.exposure_id.clone(),
        exposure_class: e.exposure_class.clone(),
        status: e.status,
        severity: e.severity,
        event_action: e.event_action,
        risk_score: e.risk_score,
        first_seen: e.timestamp,
        last_seen: e.timestamp,
        asset_id: e.asset_id.clone(),
        hostname: e.hostname.clone(),
        asset_ip: e.asset_ip.clone(),
        dst_ip: e.dst_ip.clone(),
        dst_port: e.dst_port,
        protocol: e.protocol.clone(),
        service_name: e.service_name.clone(),
        service_product: e.service_product.clone(),
        service_version: e.service_version.clone(),
    }
}

fn apply(s: &mut exposure_current::Model, e: &ExposureEvent) {
    let newer = e.timestamp >= s.last_seen;
    s.first_seen = s.first_seen.min(e.timestamp);
    s.last_seen = s.last_seen.max(e.timestamp);
    fn pick<T: Clone>(newer: bool, stored: &mut Option<T>, event: &Option<T>) {
        let merged = if newer {
            event.clone().or(stored.take())
        } else {
            stored.take().or(event.clone())
        };
        *stored = merged;
    }
    if newer {
        s.status = e.status;
        s.severity = e.severity;
        s.event_action = e.event_action;
        s.risk_score = e.risk_score;
        s.exposure_class.clone_from(&e.exposure_class);
        s.asset_id.clone_from(&e.asset_id);
    }
    pick(newer, &mut s.hostname, &e.hostname);
    pick(newer, &mut s.asset_ip, &e.asset_ip);
    pick(newer, &mut s.dst_ip, &e.dst_ip);
    pick(newer, &mut s.dst_port, &e.dst_port);
    pick(newer, &mut s.protocol, &e.protocol);
    pick(newer, &mut s.service_name, &e.service_name);
    pick(newer, &mut s.service_product, &e.service_product);
    pick(newer, &mut s.service_version, &e.service_version);
}

fn as_stored(e: &ExposureEvent) -> exposure_event::Model {
    exposure_event::Model {
        event_id: e.event_id.clone(),
        timestamp: e.timestamp,
        office_id: e.office_id.clone(),
        asset_id: e.asset_id.clone(),
        exposure_id: e.exposure_id.clone(),
        exposure_class: e.exposure_class.clone(),
        event_action: e.event_action,
        status: e.status,
        severity: e.severity,
        risk_score: e.risk_score,
        hostname: e.hostname.clone(),
        asset_ip: e.asset_ip.clone(),
        dst_ip: e.dst_ip.clone(),
        dst_port: e.dst_port,
        protocol: e.protocol.clone(),
        service_name: e.service_name.clone(),
        service_product: e.service_product.clone(),
        service_version: e.service_version.clone(),
        scan_run_id: e.scan_run_id.clone(),
        raw_payload_json: e.raw_payload_json.clone(),
    }
}

fn base_time() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_735_689_600, 0).unwrap_or_default()
}

fn text(pool: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    // NULL-heavy: half of all optional values are NULL.
    prop::option::weighted(0.5, prop::sample::select(pool).prop_map(str::to_owned))
}

prop_compose! {
    /// Events over a tiny key space, so keys, ids and timestamps collide.
    fn arb_event(ids: u32, minutes: i64)(
        id in 0..ids,
        minute in 0..minutes,
        micros in prop::sample::select(vec![0_i64, 1, 999_999]),
        office in 0..2_u8,
        exposure in 0..3_u8,
        status in prop::sample::select(Status::ALL.to_vec()),
        severity in prop::sample::select(Severity::ALL.to_vec()),
        action in prop::sample::select(EventAction::ALL.to_vec()),
        score in 0..100_u8,
        class in prop::sample::select(vec!["open_port", "weak_tls"]),
        asset in prop::sample::select(vec!["asset-1", "asset-2"]),
        hostname in text(&["h1", "h2", "ĥøšt-😀"]),
        asset_ip in text(&["10.0.0.1", "10.0.0.2"]),
        dst_ip in text(&["10.9.9.9"]),
        dst_port in prop::option::weighted(0.5, prop::sample::select(vec![22, 443, 8443])),
        protocol in text(&["tcp", "udp"]),
        service_name in text(&["ssh", "https"]),
        service_product in text(&["OpenSSH", "nginx"]),
        service_version in text(&["1.0", "2.0"]),
        scan_run_id in text(&["run-1"]),
        payload in prop::option::of(any::<u16>()),
    ) -> ExposureEvent {
        ExposureEvent {
            event_id: format!("ev-{id}"),
            timestamp: base_time() + Duration::minutes(minute) + Duration::microseconds(micros),
            office_id: format!("office-{office}"),
            asset_id: asset.to_owned(),
            exposure_id: format!("EXP-{exposure}"),
            exposure_class: class.to_owned(),
            event_action: action,
            status,
            severity,
            risk_score: f64::from(score) / 10.0,
            hostname,
            asset_ip,
            dst_ip,
            dst_port,
            protocol,
            service_name,
            service_product,
            service_version,
            scan_run_id,
            raw_payload_json: payload.map(|p| serde_json::json!({"plugin_id": p, "tags": ["x"]})),
        }
    }
}

fn runtime() -> TestResult<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        // Where failing cases are recorded (tests/proptest-regressions/).
        source_file: Some(file!()),
        ..ProptestConfig::default()
    }
}

/// Runs `test` on generated values, failing the Rust test with the
/// minimal failing input.
fn check<S: Strategy>(
    strategy: &S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> TestResult
where
    S::Value: std::fmt::Debug,
{
    TestRunner::new(config())
        .run(strategy, test)
        .map_err(|e| e.to_string().into())
}

/// An empty migrated database per case: a new in-memory DuckDB, or one
/// PostgreSQL database per slot for the whole test, emptied between cases
/// (creating a database per case would dominate the run time).
struct Scratch {
    backend: Backend,
    postgres: RefCell<Vec<Database>>,
}

impl Scratch {
    fn new(backend: Backend) -> Self {
        Self {
            backend,
            postgres: RefCell::new(Vec::new()),
        }
    }

    async fn db(&self, slot: usize) -> Result<Database, TestCaseError> {
        if self.backend == Backend::DuckDb {
            let db = Database::open_in_memory().map_err(fail)?;
            db.init().await.map_err(fail)?;
            return Ok(db);
        }
        let existing = self.postgres.borrow().get(slot).cloned();
        if let Some(db) = existing {
            db.execute_unprepared(
                "TRUNCATE exposure_events, exposures_current, quarantined_files RESTART IDENTITY",
            )
            .await
            .map_err(fail)?;
            return Ok(db);
        }
        let url = crate::helpers::postgres_database().await.map_err(fail)?;
        let db = Database::connect(&url).await.map_err(fail)?;
        db.init().await.map_err(fail)?;
        self.postgres.borrow_mut().push(db.clone());
        Ok(db)
    }
}

async fn ingest(
    db: &Database,
    chunk: usize,
    events: &[ExposureEvent],
) -> Result<IngestStats, TestCaseError> {
    let repo = ExposureRepository::with_chunk_size(chunk);
    db.transaction(async |s| repo.ingest_events(s, events).await)
        .await
        .map_err(fail)
}

async fn tables(
    db: &Database,
) -> Result<(Vec<exposure_event::Model>, Vec<exposure_current::Model>), TestCaseError> {
    let events = ExposureEvents::find()
        .order_by_asc(exposure_event::Column::EventId)
        .all(db)
        .await
        .map_err(fail)?;
    let current = ExposuresCurrent::find()
        .order_by_asc(exposure_current::Column::OfficeId)
        .order_by_asc(exposure_current::Column::ExposureId)
        .all(db)
        .await
        .map_err(fail)?;
    Ok((events, current))
}

/// Both tables equal the model, and so do the stats of every call,
/// whatever the chunk size.
#[rstest]
fn ingest_matches_the_model(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let rt = runtime()?;
    let scratch = Scratch::new(backend);
    let calls = prop::collection::vec(prop::collection::vec(arb_event(24, 6), 0..24), 1..4);
    check(&(calls, 1_usize..9), |(calls, chunk)| {
        rt.block_on(async {
            let db = scratch.db(0).await?;
            let mut model = Model::default();
            for call in &calls {
                let expected = model.ingest(call);
                let got = ingest(&db, chunk, call).await?;
                prop_assert_eq!(got, expected);
            }
            let (events, current) = tables(&db).await?;
            let expected_events: Vec<_> = model.events.values().map(as_stored).collect();
            let expected_current: Vec<_> = model.current.values().cloned().collect();
            prop_assert_eq!(events, expected_events);
            prop_assert_eq!(current, expected_current);
            Ok(())
        })
    })
}

/// Any order of the same events gives the same first_seen, last_seen,
/// status, severity, event_action and risk_score for every key.
#[rstest]
fn ingest_order_does_not_change_the_latest_state(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let rt = runtime()?;
    let scratch = Scratch::new(backend);
    let permutations = prop::collection::vec(arb_event(1, 1), 1..40).prop_flat_map(|mut events| {
        // Unique ids, and unique timestamps so "newest" is unambiguous.
        for (i, e) in events.iter_mut().enumerate() {
            e.event_id = format!("ev-{i}");
            e.timestamp =
                base_time() + Duration::seconds(i64::try_from(i).unwrap_or(0) * 7919 % 1009);
        }
        let shuffled = Just(events.clone()).prop_shuffle();
        (Just(events), shuffled)
    });
    let strategy = (permutations, 1_usize..6, 1_usize..6, 0_usize..40);
    check(
        &strategy,
        |((events, shuffled), chunk_a, chunk_b, split)| {
            rt.block_on(async {
                let a = scratch.db(0).await?;
                ingest(&a, chunk_a, &events).await?;
                // The permutation arrives as two files.
                let b = scratch.db(1).await?;
                let split = split.min(shuffled.len());
                ingest(&b, chunk_b, &shuffled[..split]).await?;
                ingest(&b, chunk_b, &shuffled[split..]).await?;
                let latest = |rows: Vec<exposure_current::Model>| -> Vec<_> {
                    rows.into_iter()
                        .map(|r| {
                            (
                                r.office_id,
                                r.exposure_id,
                                r.first_seen,
                                r.last_seen,
                                r.status,
                                r.severity,
                                r.event_action,
                                r.risk_score.to_bits(),
                            )
                        })
                        .collect()
                };
                let (_, ca) = tables(&a).await?;
                let (_, cb) = tables(&b).await?;
                prop_assert_eq!(latest(ca), latest(cb));
                Ok(())
            })
        },
    )
}

#[test]
fn the_model_tracks_keys_once_per_call() {
    // Sanity check of the model itself: a key inserted and updated within
    // one call counts as inserted only.
    let mut model = Model::default();
    let mut e = crate::helpers::input("a", "2025-01-01T00:00:00Z", "o", "x");
    let stats = model.ingest(&[e.clone(), {
        e.event_id = "b".to_owned();
        e.clone()
    }]);
    assert_eq!((stats.exposures_inserted, stats.exposures_updated), (1, 0));
}
