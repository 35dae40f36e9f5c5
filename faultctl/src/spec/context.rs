//! What builtins reach through the evaluator: the source index, the load-time registry of
//! declarations, or the session of the test that is running.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use crate::client::DaemonClient;
use allocative::Allocative;
use starlark::codemap::{FileSpan, Span};
use starlark::eval::Evaluator;
use starlark::values::{
    NoSerialize, ProvidesStaticType, StarlarkValue, Trace, Value, ValueLike, starlark_value,
};
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::ast_scan::{ArgSite, SourceIndex};
use super::load_errors::SpecError;
use super::model::{Matrix, Service, Test};

/// The evaluator's `extra`: shared by every builtin.
#[derive(ProvidesStaticType)]
pub(crate) struct Ctx {
    pub source: Rc<SourceIndex>,
    /// Directory relative binaries are resolved against.
    pub spec_dir: PathBuf,
    pub phase: Phase,
}

/// Loading declares; running executes steps and scoped faults; a `load()`ed module only defines
/// helpers (functions, values) for the spec.
pub(crate) enum Phase {
    Load(RefCell<LoadState>),
    Run(TestSession),
    Library,
}

/// Declarations collected while the module evaluates.
#[derive(Default)]
pub(crate) struct LoadState {
    pub services: Vec<(Service, Option<FileSpan>)>,
    pub assumption_names: HashSet<String>,
    pub tests: Vec<PendingTest>,
    pub matrices: Vec<Matrix>,
    /// Syscall or family names to intercept, per service (from fault_assumption rules).
    pub intercept: BTreeMap<String, BTreeSet<String>>,
    /// The first spec error a builtin raised: it carries a better location than the evaluator's.
    pub error: Option<SpecError>,
}

/// A test as declared, before sorting by position.
pub(crate) struct PendingTest {
    pub test: Test,
    pub body: Body,
    /// Where it was declared, for ordering and duplicate-name errors.
    pub position: Span,
    pub site: Option<FileSpan>,
}

/// What the worker calls for a test. Numbers index the [`Callables`] registry.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Body {
    /// Call with no arguments; pass when it returns.
    Call(usize),
    /// Call the scenario, then `expect(result)` while the test's faults are still active.
    Scenario {
        scenario: usize,
        expect: Option<usize>,
    },
}

/// How a running test's body reaches faultd: blocking calls from the Starlark thread into the
/// async runtime.
#[derive(Clone)]
pub struct TestSession {
    /// The runtime the client lives on.
    pub runtime: Handle,
    /// A client of the daemon (or embedded engine).
    pub client: DaemonClient,
    /// The test's session.
    pub session_id: String,
    /// Seed for fault sets the body applies (`fault(...)`).
    pub seed: u64,
    /// Backend forced on those fault sets' rules (`--backend`).
    pub backend: Option<String>,
    /// Becomes `true` when the test times out: steps and evaluation stop.
    pub cancel: watch::Receiver<bool>,
    /// Syscalls (expanded) each service's filter intercepts, as faultd reported at creation.
    pub intercepted: Arc<BTreeMap<String, BTreeSet<String>>>,
    /// Fault sets applied by `fault_start`/`partition_start` and not stopped yet, by key.
    pub started: Arc<Mutex<BTreeMap<String, String>>>,
    /// What the test's `print()` calls printed, for its report.
    pub printed: Arc<Mutex<Vec<String>>>,
}

impl fmt::Debug for TestSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestSession")
            .field("session_id", &self.session_id)
            .finish()
    }
}

impl TestSession {
    /// Runs one RPC to completion from the Starlark thread, unless the test is cancelled first.
    pub(crate) fn block_on<T>(
        &self,
        rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> anyhow::Result<T> {
        let mut cancel = self.cancel.clone();
        self.runtime.block_on(async move {
            let cancelled = async move {
                if cancel.wait_for(|c| *c).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                r = rpc => r.map(tonic::Response::into_inner).map_err(|s| anyhow::anyhow!("{}", s.message())),
                () = cancelled => Err(anyhow::anyhow!("cancelled: the test timed out")),
            }
        })
    }

    /// The test's timeline so far: every syscall event of its session, read from faultd (the events of
    /// calls made before this returns are all there: faultd records a decision before answering it).
    pub(crate) fn timeline(&self) -> anyhow::Result<Vec<crate::report::model::EventReport>> {
        use faultd_proto::v1 as pb;
        let mut client = self.client.clone();
        let request = pb::WatchEventsRequest {
            session_id: self.session_id.clone(),
            from_seq: 0,
            follow: false,
        };
        let mut stream = self.block_on(client.watch_event_batches(request))?;
        let mut collected = crate::collect::Collected::default();
        loop {
            let next = self
                .runtime
                .block_on(stream.message())
                .map_err(|s| anyhow::anyhow!("reading the trace: {}", s.message()))?;
            let Some(batch) = next else { break };
            for event in &batch.events {
                collected.add(event, crate::collect::DEFAULT_MAX_EVENTS);
            }
        }
        Ok(collected.events)
    }

    /// Whether the test has been cancelled.
    pub(crate) fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }
}

/// The context of the evaluator.
pub(crate) fn ctx<'a>(eval: &Evaluator<'_, 'a, '_>) -> anyhow::Result<&'a Ctx> {
    eval.extra
        .and_then(|e| e.downcast_ref::<Ctx>())
        .ok_or_else(|| {
            anyhow::anyhow!("internal: faultctl builtin called outside a faultctl evaluator")
        })
}

/// Load state, or an error naming the builtin that may only be called at the top level.
pub(crate) fn load_state<'a>(
    eval: &Evaluator<'_, 'a, '_>,
    builtin: &str,
) -> anyhow::Result<&'a RefCell<LoadState>> {
    match &ctx(eval)?.phase {
        Phase::Load(state) => Ok(state),
        Phase::Run(_) => Err(anyhow::anyhow!(
            "{builtin}() declares part of the spec; call it at the top level of the spec, not inside a test"
        )),
        Phase::Library => Err(anyhow::anyhow!(
            "{builtin}() declares part of the spec; call it in the spec itself: a load()ed module may \
             only define helpers (functions, ops, actions, values)"
        )),
    }
}

/// The running test's session, or an error naming the builtin that needs one.
pub(crate) fn session<'a>(
    eval: &Evaluator<'_, 'a, '_>,
    what: &str,
) -> anyhow::Result<&'a TestSession> {
    match &ctx(eval)?.phase {
        Phase::Run(session) => Ok(session),
        Phase::Load(_) | Phase::Library => Err(anyhow::anyhow!(
            "{what} runs against live services; call it inside a test, scenario or expectation, not at load time"
        )),
    }
}

/// Raises `err`: at load time it is recorded (with its location and suggestion) for the final report;
/// the evaluator gets a one-line version.
pub(crate) fn raise(eval: &Evaluator<'_, '_, '_>, err: SpecError) -> anyhow::Error {
    let line = err.one_line();
    if let Ok(Ctx {
        phase: Phase::Load(state),
        ..
    }) = ctx(eval)
    {
        state.borrow_mut().error.get_or_insert(err);
    }
    anyhow::anyhow!(line)
}

/// Where the builtin being evaluated was called, and its arguments as written.
pub(crate) struct Site {
    call: Option<FileSpan>,
    source: Option<Rc<SourceIndex>>,
}

impl Site {
    /// The site of the current builtin call.
    pub(super) fn of(eval: &Evaluator<'_, '_, '_>) -> Site {
        Site {
            call: eval.call_stack_top_location(),
            source: ctx(eval).ok().map(|c| c.source.clone()),
        }
    }

    /// The call expression.
    pub(super) fn call(&self) -> Option<&FileSpan> {
        self.call.as_ref()
    }

    fn args(&self) -> Option<&[ArgSite]> {
        self.source.as_ref()?.args_of(self.call.as_ref()?)
    }

    fn span(&self, span: Span) -> Option<FileSpan> {
        self.source.as_ref().map(|s| s.file_span(span))
    }

    /// The keyword `name=` of the call, else the call.
    pub(super) fn keyword(&self, name: &str) -> Option<FileSpan> {
        self.args()
            .and_then(|args| args.iter().find(|a| a.name.as_deref() == Some(name)))
            .and_then(|a| self.span(a.key_span))
            .or_else(|| self.call.clone())
    }

    /// The `index`-th positional argument, else the call.
    pub(super) fn positional(&self, index: usize) -> Option<FileSpan> {
        self.args()
            .and_then(|args| args.iter().filter(|a| a.name.is_none()).nth(index))
            .and_then(|a| self.span(a.key_span))
            .or_else(|| self.call.clone())
    }

    /// The string literal `value` written in argument `arg` (keyword name, or positional index as
    /// text), else that argument, else the call.
    pub(super) fn string_in(&self, arg: ArgRef<'_>, value: &str) -> Option<FileSpan> {
        let found = self.args().and_then(|args| {
            let site = match arg {
                ArgRef::Keyword(name) => args.iter().find(|a| a.name.as_deref() == Some(name)),
                ArgRef::Positional(i) => args.iter().filter(|a| a.name.is_none()).nth(i),
            }?;
            site.strings
                .iter()
                .find(|(s, _)| s == value)
                .map(|(_, span)| *span)
        });
        match found {
            Some(span) => self.span(span),
            None => match arg {
                ArgRef::Keyword(name) => self.keyword(name),
                ArgRef::Positional(i) => self.positional(i),
            },
        }
    }
}

/// Names an argument of a call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ArgRef<'a> {
    /// `name=...`.
    Keyword(&'a str),
    /// The n-th positional argument.
    Positional(usize),
}

/// Functions registered by `scenario`, `fault_scenario` and `fault_matrix`, kept on the Starlark heap
/// (as the module's extra value) so the garbage collector sees them.
#[derive(Debug, Default, Trace, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct Callables<'v> {
    values: RefCell<Vec<Value<'v>>>,
}

impl<'v> Callables<'v> {
    /// Keeps `value`; returns its number.
    pub(super) fn add(&self, value: Value<'v>) -> usize {
        let mut values = self.values.borrow_mut();
        values.push(value);
        values.len() - 1
    }

    /// The function numbered `id`.
    pub(super) fn get(&self, id: usize) -> Option<Value<'v>> {
        self.values.borrow().get(id).copied()
    }

    /// The registry of the evaluator's module.
    pub(super) fn of<'a>(eval: &Evaluator<'v, 'a, '_>) -> anyhow::Result<&'v Callables<'v>> {
        eval.module()
            .extra_value()
            .and_then(|v| v.downcast_ref::<Callables<'v>>())
            .ok_or_else(|| anyhow::anyhow!("internal: callables registry missing"))
    }
}

impl fmt::Display for Callables<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} registered functions>", self.values.borrow().len())
    }
}

#[starlark_value(type = "faultctl_callables")]
impl<'v> StarlarkValue<'v> for Callables<'v> {}
