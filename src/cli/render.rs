//! What the commands print as text (with `--json`, the values themselves,
//! pretty-printed).

use std::io::{IsTerminal, Write};

use serde::Serialize;

use exposure_store::entity::{exposure_current, quarantined_file};
use exposure_store::{
    Difference, DifferenceKind, ExposureCounts, FileOutcome, FileReport, RebuildReport, Totals,
    VerifyReport,
};

/// `value` as pretty JSON and a newline.
pub(super) fn json(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// The line of text that reports one file.
pub(super) fn file_line(report: &FileReport) -> String {
    match &report.outcome {
        FileOutcome::Ingested { stats } => format!(
            "ingested     {}: {} events ({} inserted, {} skipped); exposures: {} inserted, {} updated",
            report.path.display(),
            report.events_read,
            stats.events_inserted,
            stats.events_skipped,
            stats.exposures_inserted,
            stats.exposures_updated,
        ),
        FileOutcome::Quarantined { rejection } => format!(
            "quarantined  {}: {}: {}",
            report.path.display(),
            rejection.error_type.as_str(),
            rejection.message
        ),
    }
}

/// A progress bar over `total` bytes, only when stderr is a terminal.
pub(super) fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// At most this many differences are listed as text (all of them with
/// `--json`).
const DIFFERENCES_SHOWN: usize = 20;

fn differences(out: &mut impl Write, differences: &[Difference]) -> std::io::Result<()> {
    for d in differences.iter().take(DIFFERENCES_SHOWN) {
        write!(
            out,
            "  {} {}/{}",
            d.kind.as_str(),
            d.office_id,
            d.exposure_id
        )?;
        if d.columns.is_empty() {
            writeln!(out)?;
        } else {
            writeln!(out, ": {}", d.columns.join(", "))?;
        }
    }
    if differences.len() > DIFFERENCES_SHOWN {
        writeln!(
            out,
            "  ... and {} more (--json lists all)",
            differences.len() - DIFFERENCES_SHOWN
        )?;
    }
    Ok(())
}

/// `exposures`: one line per current exposure, newest first.
pub(super) fn exposures(
    out: &mut impl Write,
    rows: &[exposure_current::Model],
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24}  {:<12}  {:<18}  {:<20}  {:<9}  {:<8}  {:>5}  {:<28}  SERVICE",
        "LAST SEEN", "OFFICE", "EXPOSURE", "CLASS", "STATUS", "SEVERITY", "RISK", "HOST"
    )?;
    for r in rows {
        let service = match (&r.service_name, r.dst_port, &r.protocol) {
            (Some(name), Some(port), Some(proto)) => format!("{name} {port}/{proto}"),
            (Some(name), _, _) => name.clone(),
            (None, Some(port), _) => port.to_string(),
            _ => String::new(),
        };
        writeln!(
            out,
            "{:<24}  {:<12}  {:<18}  {:<20}  {:<9}  {:<8}  {:>5.1}  {:<28}  {service}",
            r.last_seen.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            r.office_id,
            r.exposure_id,
            r.exposure_class,
            r.status.as_str(),
            r.severity.as_str(),
            r.risk_score,
            r.hostname.as_deref().unwrap_or("-"),
        )?;
    }
    writeln!(out, "({} shown)", rows.len())
}

/// `summary`: the table totals, then the counts by severity, status and
/// office.
pub(super) fn summary(
    out: &mut impl Write,
    counts: &ExposureCounts,
    totals: &Totals,
) -> std::io::Result<()> {
    writeln!(
        out,
        "events: {}   current exposures: {}   quarantined files: {}",
        totals.events, totals.exposures, totals.quarantined_files
    )?;
    writeln!(out, "\nby severity:")?;
    for (severity, n) in &counts.by_severity {
        writeln!(out, "  {:<10} {n:>10}", severity.as_str())?;
    }
    writeln!(out, "\nby status:")?;
    for (status, n) in &counts.by_status {
        writeln!(out, "  {:<10} {n:>10}", status.as_str())?;
    }
    writeln!(out, "\nby office:")?;
    for (office, n) in &counts.by_office {
        writeln!(out, "  {office:<10} {n:>10}")?;
    }
    Ok(())
}

/// `quarantine`: one line per quarantined file.
pub(super) fn quarantine(
    out: &mut impl Write,
    rows: &[quarantined_file::Model],
) -> std::io::Result<()> {
    if rows.is_empty() {
        writeln!(out, "no quarantined files")?;
    }
    for q in rows {
        writeln!(
            out,
            "#{}  {}  {}  {}: {}",
            q.id,
            q.quarantined_at.format("%Y-%m-%dT%H:%M:%SZ"),
            q.filename,
            q.error_type,
            q.error_message
        )?;
    }
    Ok(())
}

/// `verify`: all is well, or what is not.
pub(super) fn verify(out: &mut impl Write, report: &VerifyReport) -> std::io::Result<()> {
    let read = format!(
        "{} events, {} current exposures, {} quarantined files read",
        report.events, report.exposures, report.quarantined_files
    );
    if report.is_clean() {
        return writeln!(
            out,
            "ok: {read}; ids and keys unique; the current state is the log's"
        );
    }
    writeln!(out, "verify found problems ({read}):")?;
    if !report.duplicate_event_ids.is_empty() {
        writeln!(
            out,
            "event ids stored more than once: {}",
            report.duplicate_event_ids.join(", ")
        )?;
    }
    if !report.duplicate_keys.is_empty() {
        let keys: Vec<String> = report
            .duplicate_keys
            .iter()
            .map(|(o, x)| format!("{o}/{x}"))
            .collect();
        writeln!(
            out,
            "current keys stored more than once: {}",
            keys.join(", ")
        )?;
    }
    if !report.differences.is_empty() {
        writeln!(
            out,
            "{} key(s) differ from the state the audit log gives (exposure-store rebuild replaces them):",
            report.differences.len()
        )?;
        differences(out, &report.differences)?;
    }
    Ok(())
}

/// `rebuild`: what changed.
pub(super) fn rebuild(out: &mut impl Write, report: &RebuildReport) -> std::io::Result<()> {
    if report.changed.is_empty() {
        return writeln!(out, "nothing to change: the current state is the log's");
    }
    writeln!(
        out,
        "rebuilt: {} key(s) updated, {} inserted, {} removed",
        report.count(DifferenceKind::Differs),
        report.count(DifferenceKind::Missing),
        report.count(DifferenceKind::Unexpected),
    )?;
    differences(out, &report.changed)
}
