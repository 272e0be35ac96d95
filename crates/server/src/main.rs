//! `weft`: the Weft binary. Thin on purpose: parse the command line, set up
//! logging, run the chosen subcommand. Everything else lives in the crates.

mod cli;
mod persist;
mod serve;
mod shutdown;
mod telemetry;

use clap::Parser;

use crate::cli::{Cli, Command};

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
            Command::Serve(args) => serve::node_id(&args.kafka),
            Command::Persist(_) => serve::host_name(),
        };
        let telemetry = match telemetry::init(&cli.log, &instance) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("weft: {error:#}");
                return Err(None);
            }
        };
        let outcome = match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Persist(args) => persist::run(*args).await,
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
