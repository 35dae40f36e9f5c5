//! The faultd daemon: serves the faultd.v1 API on a Unix socket (callers admitted by their peer
//! credentials) and, with TLS and client authentication, on TCP for remote clients, until SIGTERM or
//! SIGINT, then stops every session's services and removes every fault before it exits.

use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use faultd::RunAs;
use faultd::auth::{self, LocalPolicy, RemotePolicy};
use faultd::config::{Config, LogFormat};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;

#[derive(Parser)]
#[command(name = "faultd", version = faultd::VERSION, about = "Fault-injection daemon")]
struct Cli {
    /// TOML configuration (see the README's Install section); flags override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Unix socket to listen on [default: /run/faultd/faultd.sock]. Ignored when systemd passes a
    /// socket (faultd.socket).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Admit the members of this group on the Unix socket besides root; their services run as
    /// themselves. The socket's group is set to it.
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// Also listen on this TCP address (e.g. 0.0.0.0:7070) for remote clients (`https://host:port`).
    /// Needs --tls-cert and --tls-key, and client authentication: --token-file and/or
    /// --tls-client-ca (or, on a loopback address only, --insecure-loopback-no-auth).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// PEM certificate chain for --listen.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --listen.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Accept remote clients with a certificate signed by this CA (PEM): mutual TLS.
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Accept remote clients sending `authorization: Bearer TOKEN` with a token of this file: one per
    /// line, `TOKEN`, `NAME:TOKEN`, or `NAME:TOKEN:root` to let that client's services run as root.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Serve --listen without client authentication; refused unless its address is loopback. Any
    /// local user can then use faultd, with services running as --run-as-user.
    #[arg(long)]
    insecure_loopback_no_auth: bool,
    /// The user remote callers' services run as, unless their token grants root [default: nobody].
    #[arg(long, value_name = "USER")]
    run_as_user: Option<String>,
    /// Log format on stderr [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print what this host can do: enforcement backends (or why not), kernel, cgroup mode.
    Probe,
}

/// A TLS handshake not finished after this long closes the connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// What `cargo xtask dist` runs to generate faultd's completions and man page from [`Cli`]: kept out
/// of [`Cli`] so that neither shows these commands.
#[derive(Parser)]
#[command(name = "faultd")]
enum Generate {
    /// Print a completion script for SHELL on stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (faultd.1 and faultd-<command>.1) into DIR.
    Man {
        /// Where the pages go (created when missing).
        dir: PathBuf,
    },
}

impl Generate {
    fn run(self) -> anyhow::Result<()> {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        match self {
            Generate::Completions { shell } => {
                clap_complete::generate(shell, &mut cmd, "faultd", &mut std::io::stdout());
            }
            Generate::Man { dir } => {
                std::fs::create_dir_all(&dir)?;
                cmd.build();
                let write = |cmd: clap::Command, name: &str| -> anyhow::Result<()> {
                    let path = dir.join(format!("{name}.1"));
                    let mut file = std::fs::File::create(&path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    Ok(clap_mangen::Man::new(cmd).render(&mut file)?)
                };
                let subs = cmd.get_subcommands();
                for sub in subs.filter(|s| !s.is_hide_set() && s.get_name() != "help") {
                    write(sub.clone(), &format!("faultd-{}", sub.get_name()))?;
                }
                write(cmd, "faultd")?;
            }
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == faultd::mock::MOCK_COMMAND)
    {
        // A mock service this faultd launched (see faultd::mock).
        let args: Vec<String> = std::env::args_os()
            .skip(2)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        std::process::exit(faultd::mock::main(&args));
    }
    if let Some(first) = std::env::args_os().nth(1)
        && (first == "completions" || first == "man")
    {
        return Generate::parse().run();
    }
    let cli = Cli::parse();
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format.or(config.log.format).unwrap_or_default() {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    if let Some(Command::Probe) = cli.command {
        print!("{}", faultd::probe::probe());
        return Ok(());
    }
    let settings = Settings::new(cli, config)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(settings))
}

/// The TCP listener, ready to bind.
struct Remote {
    addr: SocketAddr,
    tls: faultd::server::Tls,
    policy: RemotePolicy,
    handshake_timeout: Duration,
    max_pending: usize,
}

/// Flags over the file, checked.
struct Settings {
    socket: PathBuf,
    local: LocalPolicy,
    remote: Option<Remote>,
    limits: faultd::Limits,
}

impl Settings {
    fn new(cli: Cli, config: Config) -> anyhow::Result<Settings> {
        let socket = cli
            .socket
            .or(config.socket)
            .unwrap_or_else(|| faultd::DEFAULT_SOCKET.into());
        let group = match cli.group.or(config.auth.group) {
            Some(name) => {
                let gid = auth::group_id(&name)?;
                Some((name, gid))
            }
            None => None,
        };
        let limits = &config.limits;
        let engine_limits = limits.engine();
        let handshake_timeout = limits
            .handshake_timeout_ms
            .map_or(HANDSHAKE_TIMEOUT, Duration::from_millis);
        let max_pending = limits
            .max_pending_handshakes
            .unwrap_or(MAX_PENDING_HANDSHAKES);
        let tcp = config.tcp;
        let remote = match cli.listen.or(tcp.listen) {
            None => None,
            Some(addr) => {
                let insecure =
                    cli.insecure_loopback_no_auth || tcp.insecure_loopback_no_auth == Some(true);
                Some(remote(
                    addr,
                    cli.tls_cert.or(tcp.tls_cert),
                    cli.tls_key.or(tcp.tls_key),
                    cli.token_file.or(config.auth.token_file),
                    cli.tls_client_ca.or(config.auth.tls_client_ca),
                    insecure,
                    cli.run_as_user
                        .or(config.auth.run_as_user)
                        .unwrap_or_else(|| "nobody".into()),
                    handshake_timeout,
                    max_pending,
                )?)
            }
        };
        Ok(Settings {
            socket,
            local: LocalPolicy { group },
            remote,
            limits: engine_limits,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn remote(
    addr: SocketAddr,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    token_file: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    insecure: bool,
    run_as_user: String,
    handshake_timeout: Duration,
    max_pending: usize,
) -> anyhow::Result<Remote> {
    let (Some(cert), Some(key)) = (cert, key) else {
        bail!(
            "--listen {addr} needs --tls-cert and --tls-key: faultd does not offer its API in plain text over TCP"
        );
    };
    if insecure && !addr.ip().is_loopback() {
        bail!(
            "--insecure-loopback-no-auth applies only to a loopback address (127.0.0.1, ::1), and \
             {addr} is not one: anyone who reaches it could run commands on this host"
        );
    }
    if token_file.is_none() && client_ca.is_none() && !insecure {
        bail!(
            "--listen {addr} refused: without client authentication anyone who reaches that port \
             could run commands on this host. Give --token-file FILE (bearer tokens) and/or \
             --tls-client-ca FILE (client certificates), or, for a loopback address only, \
             --insecure-loopback-no-auth"
        );
    }
    if insecure && token_file.is_none() && client_ca.is_none() {
        tracing::warn!(%addr, "serving TCP without client authentication (--insecure-loopback-no-auth)");
    }
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let ca = client_ca.as_deref().map(read).transpose()?;
    let tls = faultd::server::Tls::new(&read(&cert)?, &read(&key)?, ca.as_deref())?;
    let tokens = match &token_file {
        Some(path) => auth::read_tokens(path)?,
        None => Vec::new(),
    };
    let run_as = RunAs::user(&run_as_user)
        .with_context(|| format!("run_as_user {run_as_user:?} (remote callers' services)"))?;
    Ok(Remote {
        addr,
        tls,
        policy: RemotePolicy {
            tokens,
            client_certs: ca.is_some(),
            insecure,
            run_as,
        },
        handshake_timeout,
        max_pending,
    })
}

/// The Unix listener systemd passed (socket activation: `LISTEN_PID`, `LISTEN_FDS`, fd 3), if any.
fn activated_socket() -> anyhow::Result<Option<tokio::net::UnixListener>> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let fds: u32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !ours || fds == 0 {
        return Ok(None);
    }
    // SAFETY: removing variables before any other thread exists (the runtime starts later).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    // SAFETY: systemd passes the listening socket as fd 3 (SD_LISTEN_FDS_START), owned by us now.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(3) };
    listener
        .set_nonblocking(true)
        .context("the socket systemd passed")?;
    Ok(Some(tokio::net::UnixListener::from_std(listener)?))
}

/// Tells systemd (Type=notify) about our state, when started by it.
fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd ({state}): {e}");
    }
}

/// How long open connections get to finish once every session is stopped.
const DRAIN: Duration = Duration::from_secs(5);

/// Runs a server to its end, but no longer than [`DRAIN`] after the stop was asked for: a client
/// that keeps a connection open does not keep faultd alive.
async fn drained<E: Into<anyhow::Error>>(
    serving: impl std::future::Future<Output = Result<(), E>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let deadline = async {
        let _ = stop.wait_for(|s| *s).await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        served = serving => served.map_err(Into::into),
        () = deadline => {
            tracing::warn!("clients still connected {}s after every session stopped; exiting", DRAIN.as_secs());
            Ok(())
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let Settings {
        socket,
        local,
        remote,
        limits,
    } = settings;
    let activated = activated_socket()?;
    let engine = faultd::Engine::start_with(limits).await?;
    let (listener, owns_socket) = match activated {
        Some(listener) => {
            tracing::info!("faultd listening on the socket systemd passed");
            (listener, false)
        }
        None => {
            let gid = local.group.as_ref().map(|(_, gid)| *gid);
            let listener = faultd::server::bind_unix(&socket, gid)
                .with_context(|| format!("cannot listen on {}", socket.display()))?;
            tracing::info!(socket = %socket.display(), group = ?local.group, "faultd listening");
            (listener, true)
        }
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let tcp = match remote {
        None => None,
        Some(remote) => {
            let tcp = tokio::net::TcpListener::bind(remote.addr)
                .await
                .with_context(|| format!("cannot listen on {}", remote.addr))?;
            tracing::info!(
                addr = %tcp.local_addr()?,
                tokens = remote.policy.tokens.len(),
                client_certs = remote.policy.client_certs,
                "faultd listening (TLS)"
            );
            let router = faultd::server::remote_router(engine.clone(), remote.policy).await;
            let incoming = faultd::server::tls_incoming(
                tcp,
                remote.tls,
                remote.handshake_timeout,
                remote.max_pending,
            );
            Some(tokio::spawn(router.serve_with_incoming_shutdown(
                incoming,
                stopped(stop_rx.clone()),
            )))
        }
    };

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stopping = engine.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping every session"),
            _ = int.recv() => tracing::info!("SIGINT: stopping every session"),
        }
        sd_notify("STOPPING=1");
        // Sessions first: stopping them ends every follow stream and every step in flight, so the
        // servers have nothing left to wait for.
        stopping.shutdown().await;
        let _ = stop_tx.send(true);
    });
    let router = faultd::server::unix_router(engine.clone(), local).await;
    sd_notify("READY=1");
    let serving = router
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopped(stop_rx.clone()));
    let served = drained(serving, stop_rx.clone()).await;
    if let Some(tcp) = tcp {
        let tls = async {
            tcp.await
                .map_err(anyhow::Error::from)?
                .map_err(anyhow::Error::from)
        };
        if let Err(e) = drained(tls, stop_rx).await {
            tracing::error!("serving TLS: {e:#}");
        }
    }
    engine.shutdown().await;
    if owns_socket {
        let _ = std::fs::remove_file(&socket);
    }
    served.context("serving the API")
}
