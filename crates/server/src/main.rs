//! `weft`: the Weft binary. Thin on purpose: parse the command line, set up
//! logging, bind, start the chosen subcommand and stop it on a signal.
//! Everything else lives in the library and the crates under it.

use anyhow::Context;
use clap::Parser;
use tracing::info;
use weft_server::cli::{Cli, Command, PersistArgs, ServeArgs};
use weft_server::{
    Listeners, Node, NodeConfig, PersistConfig, Worker, config, shutdown, telemetry,
};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("weft: start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let instance = match &cli.command {
            Command::Serve(args) => config::node_id(&args.kafka),
            Command::Persist(_) | Command::Docs(_) => config::host_name(),
        };
        let telemetry = match telemetry::init(&cli.log, &instance) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("weft: {error:#}");
                return Err(None);
            }
        };
        let outcome = match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Persist(args) => persist(*args).await,
            Command::Docs(args) => weft_server::docs::run(args).await,
        };
        telemetry.shutdown().await;
        outcome.map_err(Some)
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(Some(error)) => {
            tracing::error!("{error:#}");
            eprintln!("weft: {error:#}");
            std::process::ExitCode::FAILURE
        }
        Err(None) => std::process::ExitCode::FAILURE,
    }
}

/// `weft serve`: validate, bind, start, wait for a signal, drain.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = NodeConfig::from_args(&args)?;
    let listeners = Listeners::bind(&args).await?;
    let node = Node::start(config, listeners).await?;
    let signal = shutdown::signal().await?;
    info!(signal, grace = ?args.shutdown_grace, "draining");
    node.shutdown(args.shutdown_grace).await?;
    Ok(())
}

/// `weft persist`: the same for the persistence worker.
async fn persist(args: PersistArgs) -> anyhow::Result<()> {
    let config = PersistConfig::from_args(&args)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen / WEFT_PERSIST_LISTEN {}: bind", args.listen))?;
    let worker = Worker::start(config, listener).await?;
    let signal = shutdown::signal().await?;
    info!(signal, grace = ?args.shutdown_grace, "draining: writing folded documents and committing");
    worker.shutdown(args.shutdown_grace).await
}
