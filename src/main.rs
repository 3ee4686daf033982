//! The `exposure-store` binary; the command line lives in
//! [`exposure_store::cli`].

use std::process::ExitCode;

use clap::Parser;
use exposure_store::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    exposure_store::migration::init_logging();
    run(Cli::parse()).await
}
