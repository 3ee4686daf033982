//! What both command lines (`exposure-store` and the migration binary) set
//! up.

/// Sends logs to stderr, filtered by `RUST_LOG` (default `warn`): the set-up
/// of both binaries, `exposure-store` and the migration crate's.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}
