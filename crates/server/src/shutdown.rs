//! Waiting for SIGTERM or ctrl-c.

use anyhow::Context;

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() -> anyhow::Result<&'static str> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    tokio::select! {
        _ = terminate.recv() => Ok("SIGTERM"),
        result = tokio::signal::ctrl_c() => {
            result.context("install ctrl-c handler")?;
            Ok("SIGINT")
        }
    }
}
