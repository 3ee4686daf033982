//! The `exposure-store` binary: the command line (`cli/`) over the
//! `exposure_store` library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, run};

/// mimalloc rather than glibc's malloc: an ingest allocates and frees a
/// dozen small strings per event, on two threads (README, *Performance*).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    exposure_store::infra::init_logging();
    run(Cli::parse()).await
}
