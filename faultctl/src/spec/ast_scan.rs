//! What the evaluator does not tell us, read from the syntax tree before evaluation: where each
//! argument of each call is (so errors can point at the keyword or string at fault), which keywords
//! `fault(<name>, ...)` and `fault_start(<name>, ...)` calls use and which syscalls `trace(<name>,
//! syscalls=[...])` names (their syscalls must be intercepted from launch), which names are called,
//! and where each top-level `def` is (test order).

use std::collections::{HashMap, HashSet};

use starlark::codemap::{CodeMap, FileSpan, Span};
use starlark::syntax::AstModule;
use starlark::syntax::ast::{ArgumentP, AssignTargetP, AstExpr, AstLiteral, ExprP, StmtP};

/// One argument of a call as written.
#[derive(Debug, Clone)]
pub(crate) struct ArgSite {
    /// Keyword name, `None` for a positional argument.
    pub name: Option<String>,
    /// The keyword token, or the whole argument when positional.
    pub key_span: Span,
    /// String literals in the value: the value itself, or the items of a list/tuple literal.
    pub strings: Vec<(String, Span)>,
}

/// Argument sites of every call in the spec, keyed by the call expression's span.
#[derive(Debug)]
pub(crate) struct SourceIndex {
    codemap: CodeMap,
    calls: HashMap<Span, Vec<ArgSite>>,
    /// `fault(<identifier>, key=...)` calls: the identifier and each keyword with its span.
    pub fault_calls: Vec<FaultCall>,
    /// Top-level `def` statements: name and the span of the name.
    pub defs: Vec<(String, Span)>,
    /// `trace(<identifier>, syscalls=[...])` and `trace_start(...)` calls: the identifier and each
    /// syscall string with its span.
    pub trace_calls: Vec<FaultCall>,
    /// Every name called as a function somewhere in the spec.
    pub called: HashSet<String>,
    /// `(service, interface)` pairs protocol faults target anywhere in the spec
    /// (`fault(db.main, error(...))`, `fault_assumption(..., target=db.main, rules=[...])`), the
    /// service named by the literal of its top-level `db = service("postgres", ...)`: these
    /// interfaces get a proxy before any `.addr` is read.
    pub proxied: Vec<(String, String)>,
}

/// A `fault(target, ...)` call whose target is a plain name.
#[derive(Debug, Clone)]
pub(crate) struct FaultCall {
    /// The target identifier (`inventory` in `fault(inventory, write=deny("EIO"), run=f)`).
    pub target: String,
    /// Keywords other than `run`, with the keyword token's span.
    pub keys: Vec<(String, Span)>,
}

impl SourceIndex {
    /// Scans a parsed module.
    pub(super) fn scan(ast: &AstModule) -> SourceIndex {
        let mut index = SourceIndex {
            codemap: ast.file_span(Span::default()).file,
            calls: HashMap::new(),
            fault_calls: Vec::new(),
            defs: Vec::new(),
            trace_calls: Vec::new(),
            called: HashSet::new(),
            proxied: Vec::new(),
        };
        let top = ast.statement();
        let top_level: Vec<_> = match &top.node {
            StmtP::Statements(xs) => xs.iter().collect(),
            _ => vec![top],
        };
        let mut service_vars: HashMap<String, String> = HashMap::new();
        for stmt in &top_level {
            match &stmt.node {
                StmtP::Def(def) => index
                    .defs
                    .push((def.name.node.ident.clone(), def.name.span)),
                StmtP::Assign(assign) => {
                    if let AssignTargetP::Identifier(var) = &assign.lhs.node
                        && let ExprP::Call(callee, args) = &assign.rhs.node
                        && let ExprP::Identifier(f) = &callee.node
                        && matches!(f.node.ident.as_str(), "service" | "mock_service")
                        && let Some(ArgumentP::Positional(name)) =
                            args.args.first().map(|a| &a.node)
                        && let ExprP::Literal(AstLiteral::String(name)) = &name.node
                    {
                        service_vars.insert(var.node.ident.clone(), name.node.clone());
                    }
                }
                _ => {}
            }
        }
        let mut targets = Vec::new();
        top.visit_expr(|e| index.walk(e, &mut targets));
        index.proxied = targets
            .into_iter()
            .filter_map(|(var, iface)| service_vars.get(&var).map(|s| (s.clone(), iface)))
            .collect();
        index
    }

    fn walk(&mut self, expr: &AstExpr, targets: &mut Vec<(String, String)>) {
        if let ExprP::Call(callee, args) = &expr.node {
            let sites: Vec<ArgSite> = args.args.iter().map(arg_site).collect();
            if let ExprP::Identifier(f) = &callee.node {
                self.called.insert(f.node.ident.clone());
                proxy_target(&f.node.ident, args, targets);
            }
            if let (ExprP::Identifier(f), Some(ArgumentP::Positional(target))) =
                (&callee.node, args.args.first().map(|a| &a.node))
                && matches!(f.node.ident.as_str(), "trace" | "trace_start")
                && let ExprP::Identifier(target) = &target.node
            {
                let syscalls = sites
                    .iter()
                    .find(|a| a.name.as_deref() == Some("syscalls"))
                    .or_else(|| sites.iter().filter(|a| a.name.is_none()).nth(1));
                self.trace_calls.push(FaultCall {
                    target: target.node.ident.clone(),
                    keys: syscalls.map(|s| s.strings.clone()).unwrap_or_default(),
                });
            }
            self.calls.insert(expr.span, sites);
            if let (ExprP::Identifier(f), Some(ArgumentP::Positional(target))) =
                (&callee.node, args.args.first().map(|a| &a.node))
                && matches!(f.node.ident.as_str(), "fault" | "fault_start")
                && let ExprP::Identifier(target) = &target.node
            {
                let keys = args
                    .args
                    .iter()
                    .filter_map(|a| match &a.node {
                        ArgumentP::Named(name, _) if name.node != "run" => {
                            Some((name.node.clone(), name.span))
                        }
                        _ => None,
                    })
                    .collect();
                self.fault_calls.push(FaultCall {
                    target: target.node.ident.clone(),
                    keys,
                });
            }
        }
        expr.visit_expr(|e| self.walk(e, targets));
    }

    /// A span of this spec as a [`FileSpan`].
    pub(super) fn file_span(&self, span: Span) -> FileSpan {
        self.codemap.file_span(span)
    }

    /// The arguments of the call at `call`, if it is a call written in this spec.
    pub(super) fn args_of(&self, call: &FileSpan) -> Option<&[ArgSite]> {
        if call.file.filename() != self.codemap.filename() {
            return None;
        }
        self.calls.get(&call.span).map(Vec::as_slice)
    }
}

/// `fault(x.iface, rule, ...)` with positional rules, or `fault_assumption(..., target=x.iface,
/// rules=...)`: records `(x, iface)`.
fn proxy_target(
    callee: &str,
    args: &starlark::syntax::ast::CallArgsP<starlark::syntax::ast::AstNoPayload>,
    targets: &mut Vec<(String, String)>,
) {
    let dotted = |e: &AstExpr| match &e.node {
        ExprP::Dot(base, iface) => match &base.node {
            ExprP::Identifier(var) => Some((var.node.ident.clone(), iface.node.clone())),
            _ => None,
        },
        _ => None,
    };
    let target = match callee {
        "fault"
            if args
                .args
                .iter()
                .filter(|a| matches!(a.node, ArgumentP::Positional(_)))
                .count()
                > 1 =>
        {
            match args.args.first().map(|a| &a.node) {
                Some(ArgumentP::Positional(t)) => dotted(t),
                _ => None,
            }
        }
        "fault_assumption"
            if args
                .args
                .iter()
                .any(|a| matches!(&a.node, ArgumentP::Named(n, _) if n.node == "rules")) =>
        {
            args.args.iter().find_map(|a| match &a.node {
                ArgumentP::Named(n, v) if n.node == "target" => dotted(v),
                _ => None,
            })
        }
        _ => None,
    };
    targets.extend(target);
}

fn arg_site(arg: &starlark::syntax::ast::AstArgument) -> ArgSite {
    let (name, key_span, value) = match &arg.node {
        ArgumentP::Named(name, value) => (Some(name.node.clone()), name.span, value),
        ArgumentP::Positional(value) | ArgumentP::Args(value) | ArgumentP::KwArgs(value) => {
            (None, arg.span, value)
        }
    };
    let literal = |e: &AstExpr| match &e.node {
        ExprP::Literal(AstLiteral::String(s)) => Some((s.node.clone(), e.span)),
        _ => None,
    };
    let strings = match &value.node {
        ExprP::List(items) | ExprP::Tuple(items) => items.iter().filter_map(literal).collect(),
        // Dict keys: route patterns, op names.
        ExprP::Dict(pairs) => pairs.iter().filter_map(|(k, _)| literal(k)).collect(),
        _ => literal(value).into_iter().collect(),
    };
    ArgSite {
        name,
        key_span,
        strings,
    }
}
