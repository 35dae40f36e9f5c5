//! What the evaluator does not tell us, read from the syntax tree before evaluation: where each
//! argument of each call is (so errors can point at the keyword or string at fault), which keywords
//! `fault(<name>, ...)` calls use (their syscalls must be intercepted from launch), and where each
//! top-level `def` is (test order).

use std::collections::HashMap;

use starlark::codemap::{CodeMap, FileSpan, Span};
use starlark::syntax::AstModule;
use starlark::syntax::ast::{ArgumentP, AstExpr, AstLiteral, ExprP, StmtP};

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
        };
        let top = ast.statement();
        let top_level: Vec<_> = match &top.node {
            StmtP::Statements(xs) => xs.iter().collect(),
            _ => vec![top],
        };
        for stmt in top_level {
            if let StmtP::Def(def) = &stmt.node {
                index
                    .defs
                    .push((def.name.node.ident.clone(), def.name.span));
            }
        }
        top.visit_expr(|e| index.walk(e));
        index
    }

    fn walk(&mut self, expr: &AstExpr) {
        if let ExprP::Call(callee, args) = &expr.node {
            let sites = args.args.iter().map(arg_site).collect();
            self.calls.insert(expr.span, sites);
            if let (ExprP::Identifier(f), Some(ArgumentP::Positional(target))) =
                (&callee.node, args.args.first().map(|a| &a.node))
                && f.node.ident == "fault"
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
        expr.visit_expr(|e| self.walk(e));
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
        _ => literal(value).into_iter().collect(),
    };
    ArgSite {
        name,
        key_span,
        strings,
    }
}
