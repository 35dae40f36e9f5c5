//! `faultctl`: run Starlark fault-injection specs through faultd.
//!
//! Exit codes: 0 all tests passed, 1 spec or usage error (or faultd unreachable, crashed or speaking
//! another protocol version), 2 a test failed, 130 / 143 interrupted by SIGINT (Ctrl-C) / SIGTERM
//! after tearing down the session in flight (a second signal exits at once).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use faultctl::client;
use faultctl::report::{json, junit, text};
use faultctl::runner::{self, RunError, RunOptions, Stop};
use faultctl::spec::{self, SpecRuntime};
use faultd_proto::v1::ProbeRequest;
use tokio::signal::unix::{Signal, SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "faultctl",
    version = faultctl::VERSION,
    about = "Run Starlark fault-injection specs through faultd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a spec's tests, each against fresh services, and report.
    Run {
        /// The spec (`*.star`).
        spec: PathBuf,
        /// Run only tests whose name matches this glob (`*`, `?`); with or without `test_`, as the
        /// peer names tests (`happy_path`, `test_matrix_<scenario>_<fault>`, `matrix_<scenario>`).
        #[arg(long, value_name = "GLOB")]
        test: Option<String>,
        /// Seed for probabilistic faults (replays a run); random when absent. Always printed.
        #[arg(long)]
        seed: Option<u64>,
        /// Report format on stdout.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Also write a JUnit XML report here.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// faultd to use: unix:///path/faultd.sock, https://host:port (remote; trust its CA with
        /// FAULTCTL_CA_CERT), http://host:port, or `embedded` (an engine in this process; not in
        /// builds without the `embedded` feature). Default: the local daemon's socket when it
        /// answers, else embedded. Steps run on the daemon's host.
        #[arg(long, value_name = "URL")]
        daemon: Option<String>,
        #[command(flatten)]
        auth: AuthArgs,
        /// Per-test time limit (services, faults and scenario), e.g. 60s, 2m.
        #[arg(long, default_value = "60s", value_parser = parse_timeout)]
        timeout: Duration,
        /// Which syscalls the trace shows: `intercepted` (those the faults may touch) or `all` (every
        /// syscall of the services with its return value, through faultd's ebpf-trace backend).
        #[arg(long, value_enum, default_value_t = Trace::Intercepted)]
        trace: Trace,
        /// Force every fault rule onto one backend (`seccomp`, `ebpf-cgroup`); by default faultd
        /// picks the fastest backend that can enforce each rule.
        #[arg(long, value_name = "BACKEND")]
        backend: Option<String>,
        /// Most syscall events kept per test (the rest are counted as `dropped_events`).
        #[arg(long, value_name = "N", default_value_t = runner::DEFAULT_MAX_EVENTS)]
        max_events: usize,
        /// Run the selection N times with consecutive seeds (from --seed); reports the first run
        /// with a failure (else the last) and names the tests whose result changed (flaky) with the
        /// seeds that replay each outcome.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
        /// Run up to N tests at once, each in its own session (default: the number of CPUs). The
        /// report is the same whatever N; one at a time when sessions would share fixed ports.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
        jobs: Option<u32>,
    },
    /// Validate a spec without starting anything.
    Check {
        /// The spec (`*.star`).
        spec: PathBuf,
    },
    /// Show what faultd can do on its host (enforcement backends, kernel, cgroups).
    Probe {
        /// As for `run`.
        #[arg(long, value_name = "URL")]
        daemon: Option<String>,
        #[command(flatten)]
        auth: AuthArgs,
    },
}

/// What `cargo xtask dist` runs to generate faultctl's completions and man pages from [`Cli`]: kept
/// out of [`Cli`] so that neither shows these commands.
#[derive(Parser)]
#[command(name = "faultctl")]
enum Generate {
    /// Print a completion script for SHELL on stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (faultctl.1 and faultctl-<command>.1) into DIR.
    Man {
        /// Where the pages go (created when missing).
        dir: PathBuf,
    },
}

impl Generate {
    /// `faultctl completions SHELL` or `faultctl man DIR`, if that is the command line.
    fn requested() -> Option<Generate> {
        let first = std::env::args_os().nth(1)?;
        (first == "completions" || first == "man").then(Generate::parse)
    }

    fn run(self) -> ExitCode {
        match self {
            Generate::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "faultctl",
                    &mut std::io::stdout(),
                );
                ExitCode::SUCCESS
            }
            Generate::Man { dir } => match man_pages(Cli::command(), &dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write man pages into {}: {e}", dir.display());
                    ExitCode::from(1)
                }
            },
        }
    }
}

/// `<name>.1` for `cmd` and `<name>-<sub>.1` for each of its visible subcommands, into `dir`.
fn man_pages(mut cmd: clap::Command, dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    cmd.build();
    let write = |cmd: clap::Command, name: &str| -> std::io::Result<()> {
        let mut file = std::fs::File::create(dir.join(format!("{name}.1")))?;
        clap_mangen::Man::new(cmd).render(&mut file)
    };
    let name = cmd.get_name().to_owned();
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        // After build(), a subcommand's display name is `<name>-<sub>`, the page's title.
        let page = format!("{name}-{}", sub.get_name());
        write(sub.clone(), &page)?;
    }
    write(cmd, &name)
}

/// How faultctl authenticates to a remote faultd.
#[derive(clap::Args)]
struct AuthArgs {
    /// Send `authorization: Bearer TOKEN` with the (first) token of this file (`TOKEN` or
    /// `NAME:TOKEN` lines, as faultd's --token-file).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Client certificate (PEM) for a faultd with --tls-client-ca.
    #[arg(long, value_name = "FILE", requires = "tls_client_key")]
    tls_client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_client_cert")]
    tls_client_key: Option<PathBuf>,
}

impl AuthArgs {
    fn credentials(&self) -> Result<client::Credentials, client::ClientError> {
        client::Credentials::load(
            self.token_file.as_deref(),
            self.tls_client_cert.as_deref(),
            self.tls_client_key.as_deref(),
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Trace {
    Intercepted,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    spec::units::parse_duration(s)
}

fn main() -> ExitCode {
    if let Some(generate) = Generate::requested() {
        return generate.run();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Check { spec } => check(spec).await,
            Command::Probe { daemon, auth } => probe(daemon.as_deref(), &auth).await,
            Command::Run {
                spec,
                test,
                seed,
                format,
                junit,
                daemon,
                auth,
                timeout,
                trace,
                backend,
                max_events,
                runs,
                jobs,
            } => {
                let options = RunOptions {
                    seed: seed.unwrap_or_else(runner::random_seed),
                    timeout,
                    trace_all: trace == Trace::All,
                    backend,
                    max_events,
                    jobs: 1,
                };
                let output = Output { format, junit };
                let schedule = Schedule { runs, jobs };
                run(spec, test, output, daemon, &auth, options, schedule).await
            }
        }
    });
    // Sessions of an embedded engine are torn down with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn load(spec: PathBuf) -> anyhow::Result<Result<SpecRuntime, spec::SpecError>> {
    Ok(tokio::task::spawn_blocking(move || spec::load(&spec)).await?)
}

async fn check(path: PathBuf) -> anyhow::Result<ExitCode> {
    match load(path.clone()).await? {
        Ok(rt) => {
            let spec = rt.spec();
            println!(
                "{}: ok ({} services, {} tests)",
                path.display(),
                spec.services.len(),
                spec.tests.len()
            );
            for t in &spec.tests {
                println!("  {}", t.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

async fn probe(daemon: Option<&str>, auth: &AuthArgs) -> anyhow::Result<ExitCode> {
    let mut conn = client::connect(daemon, auth.credentials()?).await?;
    let p = conn
        .client
        .probe(ProbeRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("Probe failed: {}", s.message()))?
        .into_inner();
    if let Some(warning) =
        client::version_warning(&conn.target, &p.faultd_version, faultctl::VERSION)
        && conn.target != client::Target::Embedded
    {
        eprintln!("{warning}");
    }
    println!("{}", conn.target);
    println!(
        "faultd {}  kernel {}  arch {}",
        p.faultd_version, p.kernel_release, p.arch
    );
    let cgroup = if p.cgroup_root.is_empty() {
        "none (process groups)".to_owned()
    } else {
        p.cgroup_root.clone()
    };
    println!("cgroup: {cgroup}");
    for b in &p.backends {
        let state = if b.available {
            "available"
        } else {
            "unavailable"
        };
        println!("  {:<14} {:<11} {}", b.name, state, b.reason);
        for a in &b.action_details {
            let state = if a.available {
                "available"
            } else {
                "unavailable"
            };
            println!("    {:<12} {:<11} {}", a.action, state, a.reason);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How often and how widely a run runs its tests: `--runs`, `--jobs`.
struct Schedule {
    runs: u32,
    /// `None`: the default (the CPUs).
    jobs: Option<u32>,
}

/// Where and how a run's report goes.
struct Output {
    format: Format,
    junit: Option<PathBuf>,
}

async fn run(
    path: PathBuf,
    test: Option<String>,
    output: Output,
    daemon: Option<String>,
    auth: &AuthArgs,
    options: RunOptions,
    schedule: Schedule,
) -> anyhow::Result<ExitCode> {
    let Schedule { runs, jobs } = schedule;
    let Output {
        format,
        junit: junit_path,
    } = output;
    let credentials = auth.credentials()?;
    let (stop, interrupted_by) = stop_on_signals()?;
    let rt = match load(path.clone()).await? {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    let selected = match runner::select(rt.spec(), test.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let conn = client::connect(daemon.as_deref(), credentials).await?;
    tracing::info!("using {}", conn.target);
    conn.warn_on_version_mismatch().await;
    let seed = options.seed;
    eprintln!("seed: {seed} (replay with --seed {seed})");
    // faultd shares the host's network with every session until it isolates them (issue 12).
    let sharing = runner::jobs::Sharing::of(rt.spec(), false);
    let requested = jobs.map(|j| j as usize);
    let jobs = runner::jobs::effective(requested, runner::jobs::cpus(), selected.len(), &sharing);
    if let Some(note) = &jobs.note {
        eprintln!("{note}");
    }
    let rt = tokio::task::spawn_blocking(move || {
        let mut rt = rt;
        rt.set_evaluators(jobs.jobs).map(|()| rt)
    })
    .await??;
    let options = RunOptions {
        jobs: jobs.jobs,
        ..options
    };
    let progress = runner::progress::Progress::new(std::io::stderr().is_terminal());
    let interrupted = || ExitCode::from(interrupted_by.load(Ordering::SeqCst));
    let mut reports = Vec::new();
    for n in 0..u64::from(runs) {
        let options = RunOptions {
            seed: seed.wrapping_add(n),
            ..options.clone()
        };
        if runs > 1 {
            eprintln!("run {}/{runs}: seed {}", n + 1, options.seed);
        }
        let run = runner::run(
            &rt,
            &conn.client,
            &selected,
            &options,
            &stop,
            |done, total, t| {
                if let Some(line) = progress.line(done, total, t) {
                    eprintln!("{line}");
                }
            },
        )
        .await;
        let stopped = run.is_err() || stop.is_stopped();
        reports.push(run);
        if stopped {
            break;
        }
    }
    let summary = (runs > 1).then(|| {
        let done: Vec<_> = reports
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .cloned()
            .collect();
        runner::repeat::summary(&path.display().to_string(), &done)
    });
    let any_failed = reports
        .iter()
        .any(|r| r.as_ref().is_ok_and(|r| r.failed > 0));
    // The report shown: the first run with a failure, else the last.
    let shown = match reports
        .iter()
        .position(|r| r.as_ref().is_ok_and(|r| r.failed > 0))
    {
        Some(i) if reports.last().is_some_and(|r| r.is_ok()) => reports.swap_remove(i),
        _ => reports.pop().expect("at least one run"),
    };
    let report = match shown {
        Ok(report) => report,
        Err(RunError::Daemon(e)) => return Err(e.into()),
        Err(RunError::Interrupted(torn_down)) => {
            if torn_down.is_empty() {
                eprintln!("interrupted: no session was in flight");
            }
            for t in &torn_down {
                eprintln!("interrupted: {t}");
            }
            return Ok(interrupted());
        }
    };
    if stop.is_stopped() {
        // The signal came as the last test ended: its report is complete, the exit code says.
        eprintln!("interrupted: no session was in flight");
    }
    match format {
        Format::Text => print!("{}", text::render(&report)),
        Format::Json => println!("{}", json::render(&report)),
    }
    if let Some(p) = junit_path {
        std::fs::write(&p, junit::render(&report))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
    }
    if let Some(summary) = summary {
        eprint!("{summary}");
    }
    Ok(if stop.is_stopped() {
        interrupted()
    } else if !any_failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Exit code of a run interrupted by SIGINT (Ctrl-C).
const EXIT_SIGINT: u8 = 130;
/// Exit code of a run interrupted by SIGTERM.
const EXIT_SIGTERM: u8 = 143;

/// Handles SIGINT and SIGTERM for a run: the first stops it (the runner tears down the session in
/// flight, then faultctl exits with 130 / 143, the code stored in the returned cell); a second exits
/// at once (an embedded engine's services then die with the process through its watchdog).
fn stop_on_signals() -> std::io::Result<(Stop, Arc<AtomicU8>)> {
    let (trigger, stop) = Stop::channel();
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let code = Arc::new(AtomicU8::new(0));
    let first = code.clone();
    tokio::spawn(async move {
        let next = async |int: &mut Signal, term: &mut Signal| {
            tokio::select! {
                _ = int.recv() => ("SIGINT", EXIT_SIGINT),
                _ = term.recv() => ("SIGTERM", EXIT_SIGTERM),
            }
        };
        let (name, exit) = next(&mut int, &mut term).await;
        first.store(exit, Ordering::SeqCst);
        eprintln!(
            "\n{name}: stopping; tearing down the session in flight (at most {}s; again to exit at once)",
            runner::TEARDOWN_TIMEOUT.as_secs()
        );
        let _ = trigger.send(true);
        let (name, exit) = next(&mut int, &mut term).await;
        eprintln!("{name} again: exiting without waiting for the teardown");
        std::process::exit(i32::from(exit));
    });
    Ok((stop, code))
}
