//! The Starlark threads. Starlark values are single-threaded, so a dedicated thread parses and
//! evaluates the spec, hands the resulting plain [`Spec`] to the async side, then keeps the module
//! alive and runs test bodies on request. For `--jobs N`, [`SpecRuntime::set_evaluators`] starts
//! more such threads, each evaluating the spec into a module of its own; a body runs on whichever
//! thread is free.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use starlark::environment::{Globals, GlobalsBuilder, LibraryExtension, Module};
use starlark::eval::Evaluator;
use starlark::syntax::{AstModule, Dialect};
use starlark::values::{Value, ValueLike};
use tokio::sync::oneshot;

use super::assertions::assertions;
use super::ast_scan::SourceIndex;
use super::builtins::declarations;
use super::context::{Body, Callables, Ctx, LoadState, Phase, TestSession};
use super::limits;
use super::load_errors::SpecError;
use super::model::Spec;
use super::modules::SpecLoader;
use super::validate;
use super::values::ResponseValue;

/// A loaded spec, ready to run its tests' bodies.
pub struct SpecRuntime {
    spec: Spec,
    path: PathBuf,
    jobs: Option<mpsc::Sender<Job>>,
    /// Where every evaluator takes its next job from.
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    threads: Vec<JoinHandle<()>>,
}

struct Job {
    test: usize,
    session: TestSession,
    reply: oneshot::Sender<Result<(), String>>,
}

/// Parses and evaluates the spec at `path` on a new Starlark thread. Blocks until it is loaded.
pub fn load(path: &Path) -> Result<SpecRuntime, SpecError> {
    let (jobs_tx, jobs_rx) = mpsc::channel();
    let queue = Arc::new(Mutex::new(jobs_rx));
    let (spec, thread) = start_evaluator(path, &queue, Quiet(false))?;
    Ok(SpecRuntime {
        spec,
        path: path.to_owned(),
        jobs: Some(jobs_tx),
        queue,
        threads: vec![thread],
    })
}

/// Whether an evaluator keeps the spec's load-time `print()`s to itself (all but the first do).
#[derive(Clone, Copy)]
struct Quiet(bool);

/// Starts a Starlark thread that evaluates the spec at `path`, then runs the jobs of `queue`;
/// returns the evaluated spec once loaded.
fn start_evaluator(
    path: &Path,
    queue: &Arc<Mutex<mpsc::Receiver<Job>>>,
    quiet: Quiet,
) -> Result<(Spec, JoinHandle<()>), SpecError> {
    let (loaded_tx, loaded_rx) = mpsc::channel();
    let owned = path.to_owned();
    let queue = queue.clone();
    let thread = std::thread::Builder::new()
        .name("starlark".into())
        // Parsing and compiling recurse on the syntax tree; `limits::check_nesting` bounds its depth
        // so that this stack suffices.
        .stack_size(limits::EVALUATOR_STACK_BYTES)
        .spawn(move || evaluate(&owned, &loaded_tx, &queue, quiet))
        .map_err(|e| SpecError::new(format!("cannot start the spec evaluator thread: {e}")))?;
    match loaded_rx.recv() {
        Ok(Ok(spec)) => Ok((spec, thread)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(SpecError::new("the spec evaluator stopped unexpectedly"))
        }
    }
}

impl SpecRuntime {
    /// The evaluated spec.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Runs up to `n` test bodies at once: starts Starlark threads until there are `n` (at least
    /// one), each evaluating the spec again. Fails when a new evaluation does not give the same
    /// spec (a spec whose declarations depend on something that changed, such as a file it reads).
    pub fn set_evaluators(&mut self, n: usize) -> Result<(), SpecError> {
        while self.threads.len() < n {
            let (spec, thread) = start_evaluator(&self.path, &self.queue, Quiet(true))?;
            self.threads.push(thread);
            if spec != self.spec {
                return Err(SpecError::new(format!(
                    "{} evaluated differently the second time (its declarations must not depend \
                     on changing inputs to run tests in parallel); run it with --jobs 1",
                    self.path.display()
                )));
            }
        }
        Ok(())
    }

    /// How many test bodies can run at once.
    pub fn evaluators(&self) -> usize {
        self.threads.len()
    }

    /// Runs test number `test` (an index into [`Spec::tests`]) against `session`: its function, or
    /// its scenario then its expectation. `Err` is the failure reason.
    pub async fn run_body(&self, test: usize, session: TestSession) -> Result<(), String> {
        let (reply, result) = oneshot::channel();
        let job = Job {
            test,
            session,
            reply,
        };
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            return Err("the spec evaluator is gone".into());
        }
        result
            .await
            .unwrap_or_else(|_| Err("the spec evaluator stopped while running the test".into()))
    }
}

impl Drop for SpecRuntime {
    fn drop(&mut self) {
        self.jobs.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The builtins of the spec language on top of Starlark's standard library.
pub(crate) fn globals() -> Globals {
    use LibraryExtension::*;
    GlobalsBuilder::extended_by(&[StructType, Map, Filter, Partial, Print, Json])
        .with(declarations)
        .with(assertions)
        .build()
}

fn evaluate(
    path: &Path,
    loaded: &mpsc::Sender<Result<Spec, SpecError>>,
    jobs: &Mutex<mpsc::Receiver<Job>>,
    quiet: Quiet,
) {
    let display = path.to_string_lossy().into_owned();
    let source = match limits::read_spec(path, &display)
        .and_then(|source| limits::check_nesting(&display, &source).map(|()| source))
    {
        Ok(s) => s,
        Err(e) => {
            let _ = loaded.send(Err(e));
            return;
        }
    };
    let ast = match AstModule::parse(&display, source, &Dialect::Extended) {
        Ok(ast) => ast,
        Err(e) => {
            let _ = loaded.send(Err(from_starlark(&e)));
            return;
        }
    };
    let source = Rc::new(SourceIndex::scan(&ast));
    let spec_dir = spec_dir(path);
    let globals = globals();
    Module::with_temp_heap(|module| {
        module.set_extra_value(module.heap().alloc_complex_no_freeze(Callables::default()));
        let ctx = Ctx {
            source: source.clone(),
            spec_dir: spec_dir.clone(),
            phase: Phase::Load(RefCell::new(LoadState::default())),
        };
        let loader = SpecLoader::new(&spec_dir, &globals);
        let result = {
            let mut eval = Evaluator::new(&module);
            eval.extra = Some(&ctx);
            eval.set_loader(&loader);
            if quiet.0 {
                eval.set_print_handler(&Silent);
            }
            match limits::set_budgets(&mut eval) {
                Ok(()) => eval
                    .eval_module(ast, &globals)
                    .map(drop)
                    .map_err(|e| limits::exceeded(&eval, &e).unwrap_or_else(|| from_starlark(&e))),
                Err(e) => Err(SpecError::new(format!(
                    "cannot set the spec's budgets: {e}"
                ))),
            }
        };
        let Phase::Load(state) = ctx.phase else {
            unreachable!("created in the load phase")
        };
        let mut state = state.into_inner();
        if let Err(e) = result {
            let _ = loaded.send(Err(state.error.take().unwrap_or(e)));
            return;
        }
        let bodies = match validate::finish(path, &module, state, &source) {
            Ok((spec, bodies)) => {
                if loaded.send(Ok(spec)).is_err() {
                    return;
                }
                bodies
            }
            Err(e) => {
                let _ = loaded.send(Err(e));
                return;
            }
        };
        // One evaluator at a time waits for the next job; the others wait for the lock.
        while let Ok(job) = next(jobs) {
            let ctx = Ctx {
                source: source.clone(),
                spec_dir: spec_dir.clone(),
                phase: Phase::Run(job.session.clone()),
            };
            let outcome = match bodies.get(job.test) {
                Some(body) => run_body(&module, &ctx, *body),
                None => Err(format!("no test number {}", job.test)),
            };
            let _ = job.reply.send(outcome);
        }
    });
}

/// The next job of the queue; `Err` once the runtime is dropped.
fn next(jobs: &Mutex<mpsc::Receiver<Job>>) -> Result<Job, mpsc::RecvError> {
    jobs.lock().unwrap_or_else(|e| e.into_inner()).recv()
}

/// The load-time `print()` of every evaluation but the first: already shown once.
struct Silent;

impl starlark::PrintHandler for Silent {
    fn println(&self, _text: &str) -> starlark::Result<()> {
        Ok(())
    }
}

fn run_body(module: &Module<'_>, ctx: &Ctx, body: Body) -> Result<(), String> {
    let Phase::Run(session) = &ctx.phase else {
        return Err("internal: not a run context".into());
    };
    let printer = ToReport(session.printed.clone());
    let mut eval = Evaluator::new(module);
    eval.extra = Some(ctx);
    eval.set_print_handler(&printer);
    eval.disable_gc();
    let cancel = session.clone();
    eval.set_check_cancelled(Box::new(move || cancel.is_cancelled()));
    let callables = Callables::of(&eval).map_err(|e| e.to_string())?;
    let function = |id: usize| {
        callables
            .get(id)
            .ok_or_else(|| format!("internal: no function {id}"))
    };
    match body {
        Body::Call(id) => {
            eval.eval_function(function(id)?, &[], &[])
                .map_err(|e| reason(&e))?;
        }
        Body::Scenario { scenario, expect } => {
            let result = eval
                .eval_function(function(scenario)?, &[], &[])
                .map_err(|e| reason(&e))?;
            if let Some(expect) = expect {
                eval.eval_function(function(expect)?, &[result], &[])
                    .map_err(|e| format!("{} ({})", reason(&e), returned(result)))?;
            }
        }
    }
    Ok(())
}

/// `print()` inside a test: each line goes to the test's report (bounded), not to faultctl's output.
struct ToReport(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

/// Most lines, and bytes per line, a test's prints keep.
const PRINTED_LINES: usize = 1000;
const PRINTED_LINE_BYTES: usize = 4096;

impl starlark::PrintHandler for ToReport {
    fn println(&self, text: &str) -> starlark::Result<()> {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for line in text.lines() {
            if lines.len() == PRINTED_LINES {
                lines.push(format!(
                    "… (more than {PRINTED_LINES} lines printed; the rest dropped)"
                ));
            }
            if lines.len() > PRINTED_LINES {
                break;
            }
            let mut cut = line.len().min(PRINTED_LINE_BYTES);
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            lines.push(line[..cut].to_owned());
        }
        Ok(())
    }
}

/// What the scenario returned, for an expectation's failure reason: `status 200` for a response.
fn returned(value: Value<'_>) -> String {
    if let Some(r) = value.downcast_ref::<ResponseValue>() {
        return if r.ok {
            format!("status {}", r.status)
        } else {
            format!("no response: {}", r.error)
        };
    }
    const MAX: usize = 200;
    let repr = value.to_repr();
    match repr.char_indices().nth(MAX) {
        Some((cut, _)) => format!("scenario returned {}…", &repr[..cut]),
        None => format!("scenario returned {repr}"),
    }
}

/// A failure reason: the error's message without Starlark's traceback.
fn reason(e: &starlark::Error) -> String {
    e.without_diagnostic().to_string()
}

/// A Starlark error (syntax, name, type...) as a spec error at its location.
pub(crate) fn from_starlark(e: &starlark::Error) -> SpecError {
    let message = e.without_diagnostic().to_string();
    let message = message.lines().next().unwrap_or_default().to_owned();
    SpecError::new(message).at(e.span())
}

/// The directory of the spec, absolute, for resolving relative binaries.
fn spec_dir(path: &Path) -> PathBuf {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectation_reasons_summarise_what_the_scenario_returned() {
        Module::with_temp_heap(|module| {
            let heap = module.heap();
            let response = |ok, status, error: &str| ResponseValue {
                status,
                body: "{}".into(),
                headers: Default::default(),
                ok,
                error: error.into(),
                duration_ms: 1,
            };
            assert_eq!(returned(heap.alloc(response(true, 200, ""))), "status 200");
            assert_eq!(
                returned(heap.alloc(response(false, 0, "connection refused"))),
                "no response: connection refused"
            );
            assert_eq!(
                returned(heap.alloc("x".repeat(300))).chars().count(),
                "scenario returned ".len() + 200 + 1
            );
            assert_eq!(returned(Value::new_none()), "scenario returned None");
        });
    }
}
