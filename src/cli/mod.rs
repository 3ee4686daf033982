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
//!
//! - `args.rs`: the arguments, and the configuration they make with the
//!   environment;
//! - `render.rs`: what the commands print;
//! - `output.rs`: standard output that a departed reader cannot fail;
//! - here: dispatch, and each command's work.

mod args;
mod output;
mod render;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use self::args::Access;
pub use self::args::{Cli, Command, ExposuresArgs, IngestArgs};
use self::output::{Delivery, Output, warn};
use exposure_store::infra::EXIT_ERROR;
use exposure_store::migration::commands::render as render_migrations;
use exposure_store::{
    Database, Error, ExposureFilter, ExposureRepository, FileOutcome, FileReport, GenerateOptions,
    IngestStats, Limits, Page, Progress, generate, ingest_file, peak_rss_bytes, redact_url,
};

/// A failure that ends the command, with its exit status.
struct Fatal {
    code: u8,
    message: String,
}

impl Fatal {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_ERROR,
            message: message.into(),
        }
    }
}

impl From<Error> for Fatal {
    fn from(e: Error) -> Self {
        Self {
            code: EXIT_ERROR,
            message: e.to_string(),
        }
    }
}

impl From<std::io::Error> for Fatal {
    fn from(e: std::io::Error) -> Self {
        Self {
            code: EXIT_ERROR,
            message: e.to_string(),
        }
    }
}

impl From<serde_json::Error> for Fatal {
    fn from(e: serde_json::Error) -> Self {
        Self {
            code: EXIT_ERROR,
            message: e.to_string(),
        }
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
            write!(out, "{}", render_migrations(&states))?;
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
    let bar = render::progress_bar(sizes.iter().sum());
    let mut reports = Vec::with_capacity(files.len());
    let mut done_bytes = 0;
    let mut stopped = None;
    for (index, (file, size)) in files.iter().zip(&sizes).enumerate() {
        let progress: Option<Progress> = bar.clone().map(|bar| {
            let base = done_bytes;
            Arc::new(move |bytes: u64| bar.set_position(base + bytes)) as Progress
        });
        if let Some(bar) = &bar {
            bar.set_message(file.display().to_string());
        }
        let report = match ingest_file(db, repo, file, limits, progress).await {
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
            let line = render::file_line(&report);
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
        render::json(&mut out, &summary)?;
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
                code: EXIT_ERROR,
                message: format!("cannot write the report to standard output: {e}; {processed}"),
            });
        }
        Err(e) => warn(&format!(
            "error: cannot write the report to standard output: {e}"
        )),
    }
    if let Some((e, _)) = stopped {
        return Err(Fatal {
            code: EXIT_ERROR,
            message: format!(
                "{e}\nthe run stopped; {} file(s) not ingested: {}",
                not_reached.len(),
                not_reached.join(", ")
            ),
        });
    }
    Ok(if quarantined == 0 { 0 } else { 1 })
}

/// Prints `value` as JSON, or as `text` renders it.
fn show<W: Write>(
    out: &mut W,
    as_json: bool,
    value: &impl Serialize,
    text: impl FnOnce(&mut W) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if as_json {
        render::json(out, value)
    } else {
        text(out)
    }
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
    let page = Page {
        offset: 0,
        limit: args.limit,
    };
    let rows = ExposureRepository::default()
        .current_exposures(db, &filter, page)
        .await?;
    show(out, args.json, &rows, |out| render::exposures(out, &rows))?;
    Ok(0)
}

async fn summary_command(db: &Database, as_json: bool, out: &mut impl Write) -> Result<u8, Fatal> {
    let repo = ExposureRepository::default();
    let counts = repo.exposure_counts(db).await?;
    let totals = repo.totals(db).await?;
    show(
        out,
        as_json,
        &json!({ "counts": counts, "totals": totals }),
        |out| render::summary(out, &counts, &totals),
    )?;
    Ok(0)
}

async fn quarantine_command(
    db: &Database,
    as_json: bool,
    out: &mut impl Write,
) -> Result<u8, Fatal> {
    let rows = ExposureRepository::default().quarantined_files(db).await?;
    show(out, as_json, &rows, |out| render::quarantine(out, &rows))?;
    Ok(0)
}

async fn verify_command(db: &Database, as_json: bool, out: &mut impl Write) -> Result<u8, Fatal> {
    let report = db
        .transaction(async |s| ExposureRepository::default().verify(s).await)
        .await?;
    show(out, as_json, &report, |out| render::verify(out, &report))?;
    Ok(if report.is_clean() { 0 } else { 1 })
}

async fn rebuild_command(db: &Database, as_json: bool, out: &mut impl Write) -> Result<u8, Fatal> {
    let report = db
        .write_transaction(async |s| ExposureRepository::default().rebuild(s).await)
        .await?;
    show(out, as_json, &report, |out| render::rebuild(out, &report))?;
    Ok(0)
}
