//! The `exposure-store` command line: what an operator runs.
//!
//! Exit status: 0 when everything worked (for `ingest`: every file was
//! ingested), 1 when any file was quarantined (`ingest`) or the database
//! is not what its log says (`verify`), 2 for usage errors and when the
//! database cannot be opened, migrated or read. A reader of standard output
//! that goes away (`| head`) changes neither the work nor the status.
//!
//! The query commands (`exposures`, `summary`, `quarantine`, `verify`) open
//! a DuckDB file read-only and never migrate: they need read permission
//! only, run beside other readers, and say so when the schema is not
//! current. The other commands migrate the schema first.

mod output;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use serde_json::json;

use self::output::{Delivery, Output, warn};
use crate::config::{Config, redact_url};
use crate::entity::{Severity, Status};
use crate::generate::{GenerateOptions, generate};
use crate::ingest::{self, FileOutcome, FileReport, Limits};
use crate::migration::commands::{MigrateCommand, render};
use crate::repository::{
    DEFAULT_CHUNK_SIZE, Difference, DifferenceKind, ExposureFilter, ExposureRepository,
    IngestStats, Page,
};
use crate::{Database, Error};

/// exposure-store: ingest security exposure events and query their state.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
pub struct Cli {
    /// DuckDB database file, created with its directory if missing [env:
    /// DB_PATH; default: /app/data/exposures.duckdb].
    #[arg(long, global = true)]
    pub db: Option<PathBuf>,
    /// PostgreSQL server to use instead of the DuckDB file:
    /// postgres://user:password@host:port/database [env: DATABASE_URL].
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// DuckDB's memory limit, e.g. 512MB (default: DuckDB's, 80% of RAM). A
    /// file too large to ingest within it is quarantined, not half-written
    /// [env: DUCKDB_MEMORY_LIMIT].
    #[arg(long, global = true)]
    pub memory_limit: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest NDJSON files (and the *.ndjson / *.jsonl files of directories).
    Ingest(IngestArgs),
    /// Run a schema migration verb.
    Migrate {
        /// The verb.
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// Create or upgrade the schema (idempotent).
    Init,
    /// List current exposures, newest first.
    Exposures(ExposuresArgs),
    /// Count current exposures by office, severity and status.
    Summary {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List quarantined files and why they failed.
    Quarantine {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Read every table and check the current state against the audit log
    /// (exit 1 when anything differs).
    Verify {
        /// Print the whole report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace what differs in the current state with the state computed
    /// from the audit log, in one transaction.
    Rebuild {
        /// Print what changed as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write deterministic synthetic events as NDJSON to stdout.
    Generate {
        /// Number of events.
        #[arg(long)]
        events: u64,
        /// Number of distinct exposures (keys).
        #[arg(long, default_value_t = 1_000)]
        exposures: u64,
        /// Number of offices.
        #[arg(long, default_value_t = 20)]
        offices: u64,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

/// Arguments of `ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files and directories to ingest.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Events staged and upserted per chunk.
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk_size: u64,
    /// Longest accepted line in bytes (its content: the line end and a
    /// leading byte order mark do not count); a longer line quarantines its
    /// file.
    #[arg(long, default_value_t = ingest::DEFAULT_MAX_LINE_BYTES as u64, value_parser = clap::value_parser!(u64).range(2..))]
    pub max_line_bytes: u64,
    /// Print one JSON summary on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `exposures`.
#[derive(Debug, Args)]
pub struct ExposuresArgs {
    /// Only this office.
    #[arg(long)]
    pub office: Option<String>,
    /// Only this status (open, closed, mitigated, accepted).
    #[arg(long)]
    pub status: Option<Status>,
    /// Only this severity (info, low, medium, high, critical).
    #[arg(long)]
    pub severity: Option<Severity>,
    /// Only this exposure class.
    #[arg(long)]
    pub class: Option<String>,
    /// Only exposures last seen at or after this RFC 3339 instant.
    #[arg(long, value_parser = parse_instant)]
    pub since: Option<DateTime<Utc>>,
    /// At most this many rows.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(..=i64::MAX.unsigned_abs()))]
    pub limit: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 timestamp such as 2025-01-05T16:00:00Z: {e}"))
}

/// A failure that ends the command, with its exit status.
struct Fatal {
    code: u8,
    message: String,
}

impl Fatal {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<Error> for Fatal {
    fn from(e: Error) -> Self {
        Self {
            code: 2,
            message: e.to_string(),
        }
    }
}

impl From<std::io::Error> for Fatal {
    fn from(e: std::io::Error) -> Self {
        Self {
            code: 2,
            message: e.to_string(),
        }
    }
}

impl From<serde_json::Error> for Fatal {
    fn from(e: serde_json::Error) -> Self {
        Self {
            code: 2,
            message: e.to_string(),
        }
    }
}

/// How a command uses the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Opened as it is (`migrate` is the migration).
    Migrate,
    /// Opened and migrated: the commands that write.
    Write,
    /// Opened read-only (a DuckDB file), the schema checked, never changed.
    Read,
}

impl Cli {
    /// The configuration: these flags, then the environment ([`Config::from_env`]).
    fn config(&self, access: Access) -> Config {
        let mut config = Config::from_env();
        if let Some(url) = self.database_url.clone().filter(|u| !u.is_empty()) {
            config.database_url = Some(url);
        }
        if let Some(db) = &self.db {
            config.db_path.clone_from(db);
        }
        if let Some(limit) = self.memory_limit.clone().filter(|m| !m.is_empty()) {
            config.duckdb.memory_limit = Some(limit);
        }
        config.duckdb.read_only = access == Access::Read;
        config
    }
}

/// Runs a parsed command line and returns the process exit status.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(fatal) => {
            warn(&format!("error: {}", fatal.message));
            ExitCode::from(fatal.code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<u8, Fatal> {
    let open = async |access: Access| -> Result<Database, Fatal> {
        let db = Database::from_config(&cli.config(access)).await?;
        match access {
            Access::Migrate => {}
            Access::Write => db.init().await?,
            Access::Read => db.check_schema().await?,
        }
        Ok(db)
    };
    let mut out = Output::stdout();
    let code = match &cli.command {
        Command::Generate {
            events,
            exposures,
            offices,
            seed,
        } => {
            let options = GenerateOptions {
                events: *events,
                exposures: *exposures,
                offices: *offices,
                seed: *seed,
            };
            // Straight to stdout, stopping when the reader has all it
            // wanted (`generate ... | head`): no point making the rest.
            match generate(options, std::io::stdout().lock()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
                other => other.map(|()| 0)?,
            }
        }
        Command::Ingest(args) => {
            // The files are found (and checked) before the database is
            // touched.
            let files = expand(&args.paths)?;
            let db = open(Access::Write).await?;
            return ingest_command(&db, args, &files, out).await;
        }
        Command::Migrate { command } => {
            let states = open(Access::Migrate).await?.migrate(*command).await?;
            write!(out, "{}", render(&states))?;
            0
        }
        Command::Init => {
            let config = cli.config(Access::Write);
            open(Access::Write).await?;
            match &config.database_url {
                Some(url) => writeln!(out, "database ready: {}", redact_url(url))?,
                None => writeln!(out, "database ready: {}", config.db_path.display())?,
            }
            0
        }
        Command::Exposures(args) => {
            exposures_command(&open(Access::Read).await?, args, &mut out).await?
        }
        Command::Summary { json } => {
            summary_command(&open(Access::Read).await?, *json, &mut out).await?
        }
        Command::Quarantine { json } => {
            quarantine_command(&open(Access::Read).await?, *json, &mut out).await?
        }
        Command::Verify { json } => {
            verify_command(&open(Access::Read).await?, *json, &mut out).await?
        }
        Command::Rebuild { json } => {
            rebuild_command(&open(Access::Write).await?, *json, &mut out).await?
        }
    };
    // A reader that left early (`| head`) had all it wanted.
    out.finish()?;
    Ok(code)
}

/// The files behind the command-line paths: files as given, directories'
/// `*.ndjson` / `*.jsonl` regular files in name order. A path given that
/// is neither a directory nor a regular file (a FIFO, a device, a socket)
/// is refused: reading it could block without end, and a file is ingested
/// in one transaction.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Fatal> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path)
            .map_err(|e| Fatal::usage(format!("cannot use '{}': {e}", path.display())))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Fatal::usage(format!("cannot list '{}': {e}", path.display())))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension().is_some_and(|x| {
                            x.eq_ignore_ascii_case("ndjson") || x.eq_ignore_ascii_case("jsonl")
                        })
                })
                .collect();
            found.sort();
            files.extend(found);
        } else if meta.is_file() {
            files.push(path.clone());
        } else {
            return Err(Fatal::usage(format!(
                "cannot ingest '{}': not a regular file (a FIFO, device or socket); \
                 ingest reads whole regular files: save the stream to a file first",
                path.display()
            )));
        }
    }
    Ok(files)
}

#[derive(Serialize)]
struct IngestSummary<'a> {
    files: &'a [FileReport],
    files_ingested: usize,
    files_quarantined: usize,
    /// Files the run did not reach because the database became unusable.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    files_not_reached: Vec<String>,
    totals: IngestStats,
    /// Peak resident memory of this process (Linux; `null` elsewhere).
    peak_rss_bytes: Option<u64>,
}

/// Ingests `files` in order, one unit of work each. Every file is worked
/// through whatever happens to standard output: the report is written as
/// the files go, and a failure to write it is reported at the end.
async fn ingest_command(
    db: &Database,
    args: &IngestArgs,
    files: &[PathBuf],
    mut out: Output<std::io::Stdout>,
) -> Result<u8, Fatal> {
    let repo =
        ExposureRepository::with_chunk_size(usize::try_from(args.chunk_size).unwrap_or(usize::MAX));
    let limits = Limits {
        max_line_bytes: usize::try_from(args.max_line_bytes).unwrap_or(usize::MAX),
    };
    let sizes: Vec<u64> = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .collect();
    let bar = progress_bar(sizes.iter().sum());
    let mut reports = Vec::with_capacity(files.len());
    let mut done_bytes = 0;
    let mut stopped = None;
    for (index, (file, size)) in files.iter().zip(&sizes).enumerate() {
        let progress: Option<ingest::Progress> = bar.clone().map(|bar| {
            let base = done_bytes;
            Arc::new(move |bytes: u64| bar.set_position(base + bytes)) as ingest::Progress
        });
        if let Some(bar) = &bar {
            bar.set_message(file.display().to_string());
        }
        let report = match ingest::ingest_file(db, repo, file, limits, progress).await {
            Ok(report) => report,
            Err(e) => {
                // The database cannot take more: stop, and say which files
                // were not reached (this one included: nothing of it was kept).
                stopped = Some((e, index));
                break;
            }
        };
        done_bytes += size;
        if let Some(bar) = &bar {
            bar.set_position(done_bytes);
        }
        if !args.json {
            let line = describe(&report);
            match &bar {
                Some(bar) => bar.suspend(|| writeln!(out, "{line}")),
                None => writeln!(out, "{line}"),
            }?;
        }
        reports.push(report);
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let mut totals = IngestStats::default();
    let mut quarantined = 0;
    for report in &reports {
        match &report.outcome {
            FileOutcome::Ingested { stats } => totals += *stats,
            FileOutcome::Quarantined { .. } => quarantined += 1,
        }
    }
    let not_reached: Vec<String> = stopped
        .as_ref()
        .map(|(_, index)| {
            files[*index..]
                .iter()
                .map(|f| f.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    let summary = IngestSummary {
        files: &reports,
        files_ingested: reports.len() - quarantined,
        files_quarantined: quarantined,
        files_not_reached: not_reached.clone(),
        totals,
        peak_rss_bytes: peak_rss_bytes(),
    };
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
    } else {
        writeln!(
            out,
            "total: {} files ingested, {} quarantined; events: {} inserted, {} skipped; exposures: {} inserted, {} updated",
            summary.files_ingested,
            summary.files_quarantined,
            totals.events_inserted,
            totals.events_skipped,
            totals.exposures_inserted,
            totals.exposures_updated,
        )?;
    }
    let processed = format!(
        "{} file(s) ingested, {} quarantined",
        summary.files_ingested, summary.files_quarantined
    );
    match out.finish() {
        Ok(Delivery::Complete) => {}
        Ok(Delivery::ReaderGone) => warn(&format!(
            "note: standard output was closed early, so the report is incomplete; {processed} \
             (`exposure-store quarantine` lists the quarantined ones)"
        )),
        Err(e) if stopped.is_none() => {
            return Err(Fatal {
                code: 2,
                message: format!("cannot write the report to standard output: {e}; {processed}"),
            });
        }
        Err(e) => warn(&format!(
            "error: cannot write the report to standard output: {e}"
        )),
    }
    if let Some((e, _)) = stopped {
        return Err(Fatal {
            code: 2,
            message: format!(
                "{e}\nthe run stopped; {} file(s) not ingested: {}",
                not_reached.len(),
                not_reached.join(", ")
            ),
        });
    }
    Ok(if quarantined == 0 { 0 } else { 1 })
}

/// This process's peak resident set size, from `/proc/self/status` (`VmHWM`).
#[must_use]
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn describe(report: &FileReport) -> String {
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
fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
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

async fn exposures_command(
    db: &Database,
    args: &ExposuresArgs,
    out: &mut impl Write,
) -> Result<u8, Fatal> {
    let filter = ExposureFilter {
        office_id: args.office.clone(),
        status: args.status,
        severity: args.severity,
        exposure_class: args.class.clone(),
        last_seen_from: args.since,
        last_seen_to: None,
    };
    let rows = ExposureRepository::default()
        .current_exposures(
            db,
            &filter,
            Page {
                offset: 0,
                limit: args.limit,
            },
        )
        .await?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(0);
    }
    writeln!(
        out,
        "{:<24}  {:<12}  {:<18}  {:<20}  {:<9}  {:<8}  {:>5}  {:<28}  SERVICE",
        "LAST SEEN", "OFFICE", "EXPOSURE", "CLASS", "STATUS", "SEVERITY", "RISK", "HOST"
    )?;
    for r in &rows {
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
    writeln!(out, "({} shown)", rows.len())?;
    Ok(0)
}

async fn summary_command(db: &Database, as_json: bool, out: &mut impl Write) -> Result<u8, Fatal> {
    let repo = ExposureRepository::default();
    let counts = repo.exposure_counts(db).await?;
    let totals = repo.totals(db).await?;
    if as_json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({ "counts": counts, "totals": totals }))?
        )?;
        return Ok(0);
    }
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
    Ok(0)
}

async fn quarantine_command(
    db: &Database,
    as_json: bool,
    out: &mut impl Write,
) -> Result<u8, Fatal> {
    let rows = ExposureRepository::default().quarantined_files(db).await?;
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(0);
    }
    if rows.is_empty() {
        writeln!(out, "no quarantined files")?;
    }
    for q in &rows {
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
    Ok(0)
}

/// At most this many differences are listed as text (all of them with
/// `--json`).
const DIFFERENCES_SHOWN: usize = 20;

fn write_differences(out: &mut impl Write, differences: &[Difference]) -> std::io::Result<()> {
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

async fn verify_command(db: &Database, as_json: bool, out: &mut impl Write) -> Result<u8, Fatal> {
    let report = db
        .transaction(async |s| ExposureRepository::default().verify(s).await)
        .await?;
    let code = if report.is_clean() { 0 } else { 1 };
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(code);
    }
    let read = format!(
        "{} events, {} current exposures, {} quarantined files read",
        report.events, report.exposures, report.quarantined_files
    );
    if report.is_clean() {
        writeln!(
            out,
            "ok: {read}; ids and keys unique; the current state is the log's"
        )?;
        return Ok(code);
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
        write_differences(out, &report.differences)?;
    }
    Ok(code)
}

async fn rebuild_command(db: &Database, as_json: bool, out: &mut impl Write) -> Result<u8, Fatal> {
    let report = db
        .write_transaction(async |s| ExposureRepository::default().rebuild(s).await)
        .await?;
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(0);
    }
    if report.changed.is_empty() {
        writeln!(out, "nothing to change: the current state is the log's")?;
        return Ok(0);
    }
    writeln!(
        out,
        "rebuilt: {} key(s) updated, {} inserted, {} removed",
        report.count(DifferenceKind::Differs),
        report.count(DifferenceKind::Missing),
        report.count(DifferenceKind::Unexpected),
    )?;
    write_differences(out, &report.changed)?;
    Ok(0)
}
