//! Fuzzing the NDJSON reader and validator (proptest-based): arbitrary
//! bytes and mutated valid files never panic, and every rejection carries
//! a category, a message and the line it points at.
//!
//! Long run: `FUZZ_CASES=200000 cargo test --release --test it fuzz`.

use exposure_store::{Limits, NdjsonReader};
use proptest::prelude::*;

const VALID: &str = concat!(
    r#"{"event_id":"b3831f17","timestamp":"2025-01-05T16:00:03.161-08:00","office_id":"office-005","asset_id":"a","exposure_id":"EXP-1","exposure_class":"outdated_software","event_action":"opened","status":"open","severity":"medium","risk_score":6.4,"hostname":"ws","dst_port":53,"raw_payload_json":{"seq":0,"tags":[]}}"#,
    "\n",
    r#"{"event_id":"c1","timestamp":"2025-01-06T00:00:00Z","office_id":"o","asset_id":"a","exposure_id":"x","exposure_class":"c","event_action":"CLOSED","status":"Closed","severity":"low","risk_score":0,"protocol":null}"#,
    "\r\n"
);

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

/// Reads everything; checks the rejection's shape. Returns the number of
/// events read.
fn check(bytes: &[u8], max_line_bytes: usize) -> Result<usize, TestCaseError> {
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let mut reader = NdjsonReader::new(bytes, Limits { max_line_bytes });
    let mut events = 0;
    loop {
        match reader.next_event() {
            Ok(Some(event)) => {
                prop_assert!(event.validate().is_ok(), "an accepted event must be valid");
                events += 1;
            }
            Ok(None) => return Ok(events),
            Err(rejection) => {
                prop_assert!(!rejection.message.is_empty());
                let line = rejection.details["line"].as_u64();
                prop_assert!(
                    line.is_some_and(|l| l >= 1 && l <= lines),
                    "bad line in {rejection:?}"
                );
                prop_assert!(
                    rejection.message.starts_with("line "),
                    "{}",
                    rejection.message
                );
                return Ok(events);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn fuzz_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048), limit in 1_usize..4096) {
        check(&bytes, limit)?;
    }

    #[test]
    fn fuzz_mutated_valid_files(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0_u8..3), 1..8),
    ) {
        let mut bytes = VALID.as_bytes().to_vec();
        for (at, byte, kind) in edits {
            let len = bytes.len();
            let i = at.index(len.max(1));
            match kind {
                0 if len > 0 => bytes[i.min(len - 1)] = byte,
                1 => bytes.insert(i.min(len), byte),
                _ if len > 0 => {
                    bytes.remove(i.min(len - 1));
                }
                _ => {}
            }
        }
        check(&bytes, 1 << 20)?;
    }
}

#[test]
fn the_unmutated_seed_is_accepted() -> Result<(), TestCaseError> {
    assert_eq!(check(VALID.as_bytes(), 1 << 20)?, 2);
    Ok(())
}
