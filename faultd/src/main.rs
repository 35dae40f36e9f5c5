//! The faultd daemon: serves the faultd.v1 API on a Unix socket until SIGTERM or SIGINT, then stops every
//! session's services and removes every fault before it exits.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;

#[derive(Parser)]
#[command(name = "faultd", version, about = "Fault-injection daemon")]
struct Cli {
    /// Unix socket to listen on.
    #[arg(long, default_value = faultd::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print what this host can do: enforcement backends (or why not), kernel, cgroup mode.
    Probe,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(Command::Probe) = cli.command {
        print!("{}", faultd::probe::probe());
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(cli.socket))
}

async fn serve(socket: PathBuf) -> anyhow::Result<()> {
    let engine = faultd::Engine::new()?;
    let listener = faultd::server::bind_unix(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), "faultd listening");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping every session"),
            _ = int.recv() => tracing::info!("SIGINT: stopping every session"),
        }
    };
    let router = faultd::server::router(engine.clone()).await;
    let served = router
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop)
        .await;
    engine.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    served.context("serving the API")
}
