//! Property tests: random event sequences against an in-memory model of the
//! repository's rules, and against one ingest in timestamp order, on both
//! engines.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use exposure_store::entity::prelude::*;
use exposure_store::entity::{exposure_current, exposure_event};
use exposure_store::{Database, ExposureEvent, ExposureRepository, IngestStats, RawJson};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use rstest::rstest;
use sea_orm::{ConnectionTrait, EntityTrait, QueryOrder};

use crate::helpers::{Backend, TestResult};

type Key = (String, String);

/// The rules as a function of the stored events: per key, order the events
/// by `(timestamp, event_id)`; the greatest gives the latest columns, each
/// detail comes from the greatest event that has it.
#[derive(Default)]
struct Model {
    events: BTreeMap<String, ExposureEvent>,
}

impl Model {
    fn ingest(&mut self, input: &[ExposureEvent]) -> IngestStats {
        let before: std::collections::HashSet<Key> = self.current().into_keys().collect();
        let mut stats = IngestStats::default();
        let mut touched: BTreeSet<Key> = BTreeSet::new();
        for e in input {
            if self.events.contains_key(&e.event_id) {
                stats.events_skipped += 1;
                continue;
            }
            self.events.insert(e.event_id.clone(), e.clone());
            stats.events_inserted += 1;
            touched.insert((e.office_id.clone(), e.exposure_id.clone()));
        }
        for key in touched {
            if before.contains(&key) {
                stats.exposures_updated += 1;
            } else {
                stats.exposures_inserted += 1;
            }
        }
        stats
    }

    fn current(&self) -> BTreeMap<Key, exposure_current::Model> {
        let mut by_key: BTreeMap<Key, Vec<&ExposureEvent>> = BTreeMap::new();
        for e in self.events.values() {
            by_key
                .entry((e.office_id.clone(), e.exposure_id.clone()))
                .or_default()
                .push(e);
        }
        by_key
            .into_iter()
            .map(|(key, mut events)| {
                events.sort_by(|a, b| {
                    (a.timestamp, a.event_id.as_bytes()).cmp(&(b.timestamp, b.event_id.as_bytes()))
                });
                (key, state_of(&events))
            })
            .collect()
    }
}

/// The state of one key from its events, ascending by `(timestamp, id)`.
fn state_of(events: &[&ExposureEvent]) -> exposure_current::Model {
    let first = events[0];
    let last = events[events.len() - 1];
    // The greatest event with the detail: (value, seen_at, event_id).
    fn detail<T: Clone>(
        events: &[&ExposureEvent],
        get: impl Fn(&ExposureEvent) -> &Option<T>,
    ) -> (Option<T>, Option<DateTime<Utc>>, Option<String>) {
        events
            .iter()
            .rev()
            .find_map(|e| {
                get(e)
                    .clone()
                    .map(|v| (Some(v), Some(e.timestamp), Some(e.event_id.clone())))
            })
            .unwrap_or((None, None, None))
    }
    let (hostname, hostname_seen_at, hostname_event_id) = detail(events, |e| &e.hostname);
    let (asset_ip, asset_ip_seen_at, asset_ip_event_id) = detail(events, |e| &e.asset_ip);
    let (dst_ip, dst_ip_seen_at, dst_ip_event_id) = detail(events, |e| &e.dst_ip);
    let (dst_port, dst_port_seen_at, dst_port_event_id) = detail(events, |e| &e.dst_port);
    let (protocol, protocol_seen_at, protocol_event_id) = detail(events, |e| &e.protocol);
    let (service_name, service_name_seen_at, service_name_event_id) =
        detail(events, |e| &e.service_name);
    let (service_product, service_product_seen_at, service_product_event_id) =
        detail(events, |e| &e.service_product);
    let (service_version, service_version_seen_at, service_version_event_id) =
        detail(events, |e| &e.service_version);
    exposure_current::Model {
        office_id: last.office_id.clone(),
        exposure_id: last.exposure_id.clone(),
        exposure_class: last.exposure_class.clone(),
        status: last.status,
        severity: last.severity,
        event_action: last.event_action,
        risk_score: last.risk_score,
        first_seen: first.timestamp,
        last_seen: last.timestamp,
        asset_id: last.asset_id.clone(),
        hostname,
        asset_ip,
        dst_ip,
        dst_port,
        protocol,
        service_name,
        service_product,
        service_version,
        last_event_id: Some(last.event_id.clone()),
        hostname_seen_at,
        hostname_event_id,
        asset_ip_seen_at,
        asset_ip_event_id,
        dst_ip_seen_at,
        dst_ip_event_id,
        dst_port_seen_at,
        dst_port_event_id,
        protocol_seen_at,
        protocol_event_id,
        service_name_seen_at,
        service_name_event_id,
        service_product_seen_at,
        service_product_event_id,
        service_version_seen_at,
        service_version_event_id,
    }
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
        raw_payload_json: e.raw_payload_json.as_ref().map(|p| p.as_str().to_owned()),
    }
}

fn base_time() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_735_689_600, 0).expect("a valid instant")
}

fn text(pool: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    // NULL-heavy: half of all optional values are NULL.
    prop::option::weighted(0.5, prop::sample::select(pool).prop_map(str::to_owned))
}

prop_compose! {
    /// Events over a tiny key space, so keys, ids and timestamps collide.
    fn arb_event(ids: u32, minutes: i64)(
        id in 0..ids,
        // Ids whose byte order differs from a locale's ("EV" < "ev" < "év").
        id_prefix in prop::sample::select(vec!["ev", "EV", "év"]),
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
            event_id: format!("{id_prefix}-{id}"),
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
            raw_payload_json: payload
                .and_then(|p| RawJson::parse(&format!(r#"{{"plugin_id": {p}, "tags": ["x"]}}"#)).ok()),
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
            let expected_current: Vec<_> = model.current().into_values().collect();
            prop_assert_eq!(events, expected_events);
            prop_assert_eq!(current, expected_current);
            Ok(())
        })
    })
}

/// `(timestamp, event_id)` order, ids byte-wise.
fn by_time_then_id(a: &ExposureEvent, b: &ExposureEvent) -> std::cmp::Ordering {
    (a.timestamp, a.event_id.as_bytes()).cmp(&(b.timestamp, b.event_id.as_bytes()))
}

/// Ingests `files` in order, each in its own unit of work with its chunk
/// size, re-running a file that conflicted with a concurrent writer.
async fn writer(
    db: Database,
    files: Vec<(Vec<ExposureEvent>, usize)>,
) -> Result<(), exposure_store::Error> {
    for (events, chunk) in files {
        let repo = ExposureRepository::with_chunk_size(chunk);
        exposure_store::retry_conflicts(|| {
            db.write_transaction(async |s| repo.ingest_events(s, &events).await)
        })
        .await?;
    }
    Ok(())
}

/// The current state is a function of the stored events: the same events
/// (with many timestamp ties, late events and NULL-heavy details), shuffled,
/// split at random into files, each ingested with its own chunk size by
/// one to four concurrent writers (a file sometimes twice), leave both
/// tables identical to one ingest in `(timestamp, event_id)` order, and
/// `verify` finds nothing.
#[rstest]
fn any_order_split_and_writers_give_the_same_tables(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    let rt = runtime()?;
    let scratch = Scratch::new(backend);
    let strategy =
        prop::collection::vec(arb_event(10_000, 4), 1..60).prop_flat_map(|mut events| {
            // One version per id: two versions of one id would make the log
            // itself depend on which arrives first.
            let mut ids = std::collections::HashSet::new();
            events.retain(|e| ids.insert(e.event_id.clone()));
            let n = events.len();
            (
                Just(events.clone()).prop_shuffle(),
                Just(events),
                prop::collection::vec(0..=n, 0..6),
                prop::collection::vec(1_usize..8, 7),
                1_usize..5,
                any::<bool>(),
            )
        });
    check(
        &strategy,
        |(shuffled, events, mut cuts, chunks, writers, twice)| {
            rt.block_on(async {
                let reference = scratch.db(0).await?;
                let mut sorted = events.clone();
                sorted.sort_by(by_time_then_id);
                ingest(&reference, 1_000, &sorted).await?;

                let db = scratch.db(1).await?;
                cuts.push(shuffled.len());
                cuts.sort_unstable();
                let mut files = Vec::new();
                let mut start = 0;
                for (i, &end) in cuts.iter().enumerate() {
                    files.push((shuffled[start..end].to_vec(), chunks[i % chunks.len()]));
                    start = end;
                }
                let mut shares: Vec<Vec<_>> = vec![Vec::new(); writers];
                for (i, file) in files.iter().enumerate() {
                    shares[i % writers].push(file.clone());
                }
                if twice {
                    shares[writers - 1].push(files[0].clone());
                }
                let tasks: Vec<_> = shares
                    .into_iter()
                    .map(|share| tokio::spawn(writer(db.clone(), share)))
                    .collect();
                for task in tasks {
                    task.await.map_err(fail)?.map_err(fail)?;
                }

                prop_assert_eq!(tables(&db).await?, tables(&reference).await?);
                let report = db
                    .transaction(async |s| ExposureRepository::default().verify(s).await)
                    .await
                    .map_err(fail)?;
                prop_assert!(report.is_clean(), "{report:?}");
                prop_assert_eq!(report.events, events.len() as u64);
                Ok(())
            })
        },
    )
}

/// Calls touching more keys than DuckDB merges as a small batch (20,000;
/// above that it runs the one upsert) give the model's tables and stats
/// too, with newer, older and tied events and NULL details, followed by a
/// small call on some of the same keys.
#[rstest]
fn large_calls_match_the_model(
    #[values(Backend::DuckDb, Backend::Postgres)] backend: Backend,
) -> TestResult {
    const KEYS: u32 = 21_000;
    let pick = |n: u32| usize::try_from(n).unwrap_or(0);
    let event = |call: u32, i: u32| {
        let k = i + call;
        let some = |every: u32, value: String| (!k.is_multiple_of(every)).then_some(value);
        ExposureEvent {
            event_id: format!("ev-{call}-{i}"),
            timestamp: base_time() + Duration::minutes(i64::from((i * 7 + call * 13) % 50)),
            office_id: format!("office-{}", i % 20),
            asset_id: format!("asset-{}", k % 7),
            exposure_id: format!("EXP-{i}"),
            exposure_class: "open_port".to_owned(),
            event_action: EventAction::ALL[pick(k) % EventAction::ALL.len()],
            status: Status::ALL[pick(k) % Status::ALL.len()],
            severity: Severity::ALL[pick(k) % Severity::ALL.len()],
            risk_score: f64::from(k % 100) / 10.0,
            hostname: some(3, format!("host-{call}")),
            asset_ip: some(4, format!("10.0.{call}.1")),
            dst_ip: some(5, "10.9.9.9".to_owned()),
            dst_port: k.is_multiple_of(2).then_some(443),
            protocol: some(2, "tcp".to_owned()),
            service_name: some(3, format!("svc-{call}")),
            service_product: some(6, "nginx".to_owned()),
            service_version: some(7, format!("{call}.0")),
            scan_run_id: None,
            raw_payload_json: None,
        }
    };
    let calls: [Vec<ExposureEvent>; 3] = [
        (0..KEYS).flat_map(|i| [event(0, i), event(1, i)]).collect(),
        (0..KEYS).map(|i| event(2, i)).collect(),
        (0..100).map(|i| event(3, i * 37)).collect(),
    ];
    let rt = runtime()?;
    rt.block_on(async {
        let scratch = Scratch::new(backend);
        let db = scratch.db(0).await.map_err(|e| e.to_string())?;
        let mut model = Model::default();
        for call in &calls {
            let expected = model.ingest(call);
            let got = ingest(&db, 5_000, call).await.map_err(|e| e.to_string())?;
            assert_eq!(got, expected);
        }
        let (events, current) = tables(&db).await.map_err(|e| e.to_string())?;
        assert_eq!(events.len(), model.events.len());
        assert_eq!(current, model.current().into_values().collect::<Vec<_>>());
        Ok(())
    })
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
