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
use faultctl::generate::Generate;
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
    /// Run a spec's tests, each against fresh services, and report; or, with `-- PROGRAM ARGS`,
    /// one program under `--fault` rules (its exit code is faultctl's).
    Run {
        /// The spec (`*.star`).
        #[arg(required_unless_present = "program", conflicts_with = "program")]
        spec: Option<PathBuf>,
        /// With `-- PROGRAM`: a fault on it, `SYSCALL=ERRNO:PROB%[:PATH_GLOB][:nth=N|after=N]` or
        /// `SYSCALL=delay:DURATION:PROB%[:nth=N|after=N]` (repeatable), e.g. "write=EIO:100%:/tmp/*".
        #[arg(long, value_name = "SPEC", requires = "program")]
        fault: Vec<String>,
        /// The program to run under the --fault rules, and its arguments (after `--`).
        #[arg(last = true, value_name = "PROGRAM", conflicts_with_all = ["test", "junit", "runs", "format"])]
        program: Vec<String>,
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
        /// answers, else embedded. Steps run on the daemon's host, in the session's network.
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
    #[cfg(feature = "embedded")]
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == faultd::mock::MOCK_COMMAND)
    {
        // A mock service the embedded engine launched (see faultd::mock).
        let args: Vec<String> = std::env::args_os()
            .skip(2)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return ExitCode::from(u8::try_from(faultd::mock::main(&args)).unwrap_or(1));
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == runner::single::gate::GATE_COMMAND)
    {
        // The gate a program of `run -- program` starts behind (see runner::single::gate).
        let args: Vec<_> = std::env::args_os().skip(2).collect();
        return ExitCode::from(u8::try_from(runner::single::gate::main(&args)).unwrap_or(1));
    }
    if let Some(generate) = Generate::requested() {
        return generate.run(Cli::command());
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
                fault,
                program,
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
                let Some(spec) = spec else {
                    return run_program(&fault, &program, daemon.as_deref(), &auth, options).await;
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
    if let Some(net) = &p.network {
        let isolation = if net.available {
            "namespace per session"
        } else {
            "host"
        };
        println!("network: {isolation}: {}", net.reason);
    }
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
    // A service on the host network takes its whole session there.
    let isolated =
        conn.isolates_sessions().await && !rt.spec().services.iter().any(|s| s.host_network);
    let sharing = runner::jobs::Sharing::of(rt.spec(), isolated);
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

/// `faultctl run --fault ... -- program args`: the program's output as it comes (stdout, stderr),
/// then its trace on stderr; exits with the program's code (see `runner::single`).
async fn run_program(
    faults: &[String],
    program: &[String],
    daemon: Option<&str>,
    auth: &AuthArgs,
    options: RunOptions,
) -> anyhow::Result<ExitCode> {
    use runner::single::{SingleError, SingleRun};
    let single = match SingleRun::here(faults, program) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let (stop, interrupted_by) = stop_on_signals()?;
    let conn = client::connect(daemon, auth.credentials()?).await?;
    eprintln!("seed: {0} (replay with --seed {0})", options.seed);
    let ran = single
        .run(&conn.client, &options, &stop, |stderr, line| match stderr {
            true => eprintln!("{line}"),
            false => println!("{line}"),
        })
        .await;
    match ran {
        Ok(outcome) => {
            eprint!("{}", runner::single::render(&outcome));
            Ok(ExitCode::from(outcome.exit_code()))
        }
        Err(SingleError::Interrupted) => {
            eprintln!("{}", SingleError::Interrupted);
            Ok(ExitCode::from(interrupted_by.load(Ordering::SeqCst)))
        }
        Err(e) => Err(e.into()),
    }
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
