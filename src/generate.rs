//! Deterministic synthetic exposure events, in the NDJSON input format, for
//! demos, tests and benchmarks.
//!
//! The same options always produce the same bytes. The data looks like real
//! scan output: exposures spread over offices and assets, each reported many
//! times (repeated keys) with mostly increasing timestamps and some late
//! arrivals, status changes (opened, updated, closed, reopened), optional
//! fields that are sometimes NULL, and timestamps written with the offices'
//! own UTC offsets.

use std::io::{self, Write};

use chrono::{DateTime, Duration, FixedOffset, Offset, SecondsFormat, Utc};
use serde::Serialize;

use crate::entity::{EventAction, Severity, Status};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Number of events (lines).
    pub events: u64,
    /// Number of distinct `(office_id, exposure_id)` keys, at most.
    pub exposures: u64,
    /// Number of offices.
    pub offices: u64,
    /// Seed of the pseudo-random sequence.
    pub seed: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            events: 1_000,
            exposures: 100,
            offices: 5,
            seed: 42,
        }
    }
}

const CLASSES: [&str; 5] = [
    "open_port",
    "outdated_software",
    "default_credentials",
    "weak_tls",
    "exposed_admin_panel",
];
const SERVICES: [(i32, &str, &str, &str, &str); 6] = [
    (22, "tcp", "ssh", "OpenSSH", "8.9p1"),
    (53, "udp", "domain", "dnsmasq", "2.89"),
    (80, "tcp", "http", "nginx", "1.18.0"),
    (443, "tcp", "https", "Apache httpd", "2.4.52"),
    (
        3389,
        "tcp",
        "ms-wbt-server",
        "Microsoft Terminal Services",
        "10.0",
    ),
    (8443, "tcp", "https-alt", "Jetty", "9.4.44"),
];
const OFFSETS_MINUTES: [i32; 5] = [0, 330, -480, 60, -300];
const SCANNERS: [&str; 3] = ["agent", "nessus", "nmap"];

#[derive(Serialize)]
struct Line<'a> {
    event_id: String,
    timestamp: String,
    office_id: &'a str,
    asset_id: &'a str,
    exposure_id: &'a str,
    exposure_class: &'static str,
    event_action: EventAction,
    status: Status,
    severity: Severity,
    risk_score: f64,
    hostname: Option<&'a str>,
    asset_ip: Option<&'a str>,
    dst_ip: Option<&'a str>,
    dst_port: Option<i32>,
    protocol: Option<&'static str>,
    service_name: Option<&'static str>,
    service_product: Option<&'static str>,
    service_version: Option<&'static str>,
    scan_run_id: Option<String>,
    raw_payload_json: serde_json::Value,
}

struct Exposure {
    office_id: String,
    asset_id: String,
    exposure_id: String,
    hostname: String,
    ip: String,
    class: &'static str,
    service: usize,
    offset_minutes: i32,
    events: u64,
    status: Status,
}

/// Writes `options.events` lines of NDJSON to `out`.
///
/// # Errors
/// The writer's error.
pub fn generate(options: GenerateOptions, out: impl Write) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 20, out);
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let offices = options.offices.max(1);
    let exposures: Vec<Exposure> = (0..options.exposures.max(1))
        .map(|j| {
            let office = j % offices;
            let asset = j / 3;
            Exposure {
                office_id: format!("office-{office:03}"),
                asset_id: format!("asset-{office:03}-{asset:05}"),
                // Stable across seeds, so files generated with different
                // seeds report on the same exposures.
                exposure_id: format!("EXP-{:012x}", mix(j) & 0xffff_ffff_ffff),
                hostname: format!("ws-{office:03}-{asset:05}.corp.example"),
                ip: format!(
                    "10.{}.{}.{}",
                    office % 256,
                    (asset / 250) % 256,
                    asset % 250 + 1
                ),
                class: CLASSES[rng.usize(..CLASSES.len())],
                service: rng.usize(..SERVICES.len()),
                offset_minutes: OFFSETS_MINUTES
                    [usize::try_from(office).unwrap_or(0) % OFFSETS_MINUTES.len()],
                events: 0,
                status: Status::Open,
            }
        })
        .collect();
    let mut exposures = exposures;
    let start = DateTime::<Utc>::from_timestamp(1_735_689_600, 0).unwrap_or_default(); // 2025-01-01
    for i in 0..options.events {
        let pick = rng.usize(..exposures.len());
        let x = &mut exposures[pick];
        // Mostly in order, a minute apart on average; some events arrive late.
        let jitter = if rng.u8(..100) < 5 {
            -rng.i64(0..86_400)
        } else {
            rng.i64(0..60)
        };
        let at = start
            + Duration::seconds(i64::try_from(i).unwrap_or(i64::MAX) * 60 + jitter)
            + Duration::milliseconds(rng.i64(0..1000));
        let action = if x.events == 0 {
            EventAction::Opened
        } else {
            match (x.status, rng.u8(..100)) {
                (Status::Closed, 0..=59) => EventAction::Reopened,
                (Status::Closed, _) => EventAction::Updated,
                (_, 0..=14) => EventAction::Closed,
                _ => EventAction::Updated,
            }
        };
        let status = match action {
            EventAction::Closed => Status::Closed,
            EventAction::Updated if x.status == Status::Closed => Status::Closed,
            EventAction::Updated => match rng.u8(..100) {
                0..=4 => Status::Mitigated,
                5..=7 => Status::Accepted,
                _ => Status::Open,
            },
            EventAction::Opened | EventAction::Reopened => Status::Open,
        };
        x.status = status;
        x.events += 1;
        let risk_score = f64::from(rng.u8(..=100)) / 10.0;
        let severity = match risk_score {
            s if s >= 9.0 => Severity::Critical,
            s if s >= 7.0 => Severity::High,
            s if s >= 4.0 => Severity::Medium,
            s if s >= 1.0 => Severity::Low,
            _ => Severity::Info,
        };
        let (port, proto, name, product, version) = SERVICES[x.service];
        // Which optional fields are present (not NULL), by NULL percentage.
        let present: Vec<bool> = [15, 10, 20, 10, 10, 20, 30, 40, 50]
            .iter()
            .map(|&p| rng.u8(..100) >= p)
            .collect();
        let scanner = SCANNERS[rng.usize(..SCANNERS.len())];
        let plugin_id = rng.u32(10_000..200_000);
        let offset = FixedOffset::east_opt(x.offset_minutes * 60).unwrap_or(Utc.fix());
        let line = Line {
            event_id: uuid_like(&mut rng),
            timestamp: at
                .with_timezone(&offset)
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            office_id: &x.office_id,
            asset_id: &x.asset_id,
            exposure_id: &x.exposure_id,
            exposure_class: x.class,
            event_action: action,
            status,
            severity,
            risk_score,
            hostname: present[0].then_some(x.hostname.as_str()),
            asset_ip: present[1].then_some(x.ip.as_str()),
            dst_ip: present[2].then_some(x.ip.as_str()),
            dst_port: present[3].then_some(port),
            protocol: present[4].then_some(proto),
            service_name: present[5].then_some(name),
            service_product: present[6].then_some(product),
            service_version: present[7].then_some(version),
            scan_run_id: present[8].then(|| format!("run-{}-{}", x.office_id, i / 10_000)),
            raw_payload_json: serde_json::json!({
                "scanner": scanner,
                "plugin_id": plugin_id,
                "seq": x.events - 1,
                "tags": [],
            }),
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// SplitMix64's finaliser: a fixed, well-spread id for each exposure index.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn uuid_like(rng: &mut fastrand::Rng) -> String {
    let (a, b) = (rng.u64(..), rng.u64(..));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Limits, NdjsonReader};

    #[test]
    fn same_seed_same_bytes_and_every_line_is_a_valid_event()
    -> Result<(), Box<dyn std::error::Error>> {
        let options = GenerateOptions {
            events: 500,
            exposures: 40,
            offices: 4,
            seed: 7,
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        generate(options, &mut a)?;
        generate(options, &mut b)?;
        assert_eq!(a, b);
        let mut reader = NdjsonReader::new(a.as_slice(), Limits::default());
        let mut keys = std::collections::HashSet::new();
        let mut n = 0;
        while let Some(e) = reader.next_event().map_err(|r| r.message)? {
            keys.insert((e.office_id, e.exposure_id));
            n += 1;
        }
        assert_eq!(n, 500);
        assert!(keys.len() <= 40 && keys.len() > 30, "{} keys", keys.len());
        Ok(())
    }
}
