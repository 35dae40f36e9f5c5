//! The faultd daemon: serves the faultd.v1 API on a Unix socket (and, with TLS, on TCP for remote
//! clients) until SIGTERM or SIGINT, then stops every session's services and removes every fault before
//! it exits.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

#[derive(Parser)]
#[command(name = "faultd", version, about = "Fault-injection daemon")]
struct Cli {
    /// Unix socket to listen on.
    #[arg(long, default_value = faultd::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Also listen on this TCP address (e.g. 0.0.0.0:7070) for remote clients (`https://host:port`);
    /// needs --tls-cert and --tls-key: the API starts processes as root, so it is never offered in
    /// plain text over the network.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// PEM certificate chain for --listen.
    #[arg(long, value_name = "FILE", requires = "listen")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --listen.
    #[arg(long, value_name = "FILE", requires = "listen")]
    tls_key: Option<PathBuf>,
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
        .block_on(serve(cli))
}

/// The TCP listener's address and PEM certificate and key.
type TlsListener = (SocketAddr, Vec<u8>, Vec<u8>);

fn tls_listener(cli: &Cli) -> anyhow::Result<Option<TlsListener>> {
    let Some(addr) = cli.listen else {
        return Ok(None);
    };
    let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) else {
        bail!(
            "--listen {addr} needs --tls-cert and --tls-key: faultd does not offer its API in plain text over TCP"
        );
    };
    let read =
        |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    Ok(Some((addr, read(cert)?, read(key)?)))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let tls = tls_listener(&cli)?;
    let engine = faultd::Engine::new()?;
    let listener = faultd::server::bind_unix(&cli.socket)
        .with_context(|| format!("cannot listen on {}", cli.socket.display()))?;
    tracing::info!(socket = %cli.socket.display(), "faultd listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let tcp = match tls {
        None => None,
        Some((addr, cert, key)) => {
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            tracing::info!(addr = %tcp.local_addr()?, "faultd listening (TLS)");
            let router = faultd::server::tls_router(engine.clone(), &cert, &key)
                .await
                .context("invalid --tls-cert/--tls-key")?;
            let incoming = TcpListenerStream::new(tcp);
            Some(tokio::spawn(router.serve_with_incoming_shutdown(
                incoming,
                stopped(stop_rx.clone()),
            )))
        }
    };

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping every session"),
            _ = int.recv() => tracing::info!("SIGINT: stopping every session"),
        }
        let _ = stop_tx.send(true);
    });
    let router = faultd::server::router(engine.clone()).await;
    let served = router
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopped(stop_rx))
        .await;
    if let Some(tcp) = tcp {
        match tcp.await {
            Ok(Err(e)) => tracing::error!("serving TLS: {e}"),
            Err(e) => tracing::error!("the TLS listener stopped: {e}"),
            Ok(Ok(())) => {}
        }
    }
    engine.shutdown().await;
    let _ = std::fs::remove_file(&cli.socket);
    served.context("serving the API")
}
