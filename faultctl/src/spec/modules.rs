//! `load("helpers.star", "name", ...)`: local spec modules, resolved against the spec's directory
//! (an absolute path stays as it is), read within the same bounds as a spec, evaluated once each
//! with the spec's builtins, and frozen. A module may define functions and values (ops, actions,
//! constants) but not declare services or tests; a cycle of loads is an error. The peer's bundled
//! `@faultbox/...` modules are not supported.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use starlark::environment::{FrozenModule, Globals, Module};
use starlark::eval::{Evaluator, FileLoader};
use starlark::syntax::{AstModule, Dialect};

use super::ast_scan::SourceIndex;
use super::context::{Ctx, Phase};
use super::limits;

/// Loads the modules a spec's `load` statements name.
pub(crate) struct SpecLoader<'g> {
    spec_dir: PathBuf,
    globals: &'g Globals,
    loaded: RefCell<HashMap<PathBuf, FrozenModule>>,
    /// Modules being loaded, outermost first (to report cycles).
    loading: RefCell<Vec<PathBuf>>,
}

impl<'g> SpecLoader<'g> {
    /// A loader for the spec in `spec_dir`.
    pub(crate) fn new(spec_dir: &Path, globals: &'g Globals) -> Self {
        SpecLoader {
            spec_dir: spec_dir.to_owned(),
            globals,
            loaded: RefCell::default(),
            loading: RefCell::default(),
        }
    }

    fn evaluate(&self, file: &Path, display: &str) -> starlark::Result<FrozenModule> {
        let other = |e: super::SpecError| starlark::Error::new_other(anyhow::anyhow!("{e}"));
        let source = limits::read_spec(file, display).map_err(other)?;
        limits::check_nesting(display, &source).map_err(other)?;
        let ast = AstModule::parse(display, source, &Dialect::Extended)?;
        let ctx = Ctx {
            source: Rc::new(SourceIndex::scan(&ast)),
            spec_dir: self.spec_dir.clone(),
            phase: Phase::Library,
        };
        Module::with_temp_heap(|module| {
            {
                let mut eval = Evaluator::new(&module);
                eval.extra = Some(&ctx);
                eval.set_loader(self);
                limits::set_budgets(&mut eval).map_err(starlark::Error::new_other)?;
                eval.eval_module(ast, self.globals)?;
            }
            module
                .freeze()
                .map_err(|e| starlark::Error::new_other(anyhow::anyhow!("{e:?}")))
        })
    }
}

impl FileLoader for SpecLoader<'_> {
    fn load(&self, path: &str) -> starlark::Result<FrozenModule> {
        let fail = |m: String| starlark::Error::new_other(anyhow::anyhow!(m));
        if path.starts_with('@') {
            return Err(fail(format!(
                "load(\"{path}\"): the peer's bundled modules (@faultbox/recipes, @faultbox/mocks) \
                 are not supported; copy the helpers you need into a .star file next to the spec \
                 and load that"
            )));
        }
        let file = self.spec_dir.join(path);
        let file = file.canonicalize().map_err(|e| {
            fail(format!(
                "load(\"{path}\"): cannot read {} ({e}); paths are relative to the spec's directory",
                file.display()
            ))
        })?;
        if let Some(module) = self.loaded.borrow().get(&file) {
            return Ok(module.clone());
        }
        if self.loading.borrow().contains(&file) {
            let mut chain: Vec<String> = self
                .loading
                .borrow()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            chain.push(file.display().to_string());
            return Err(fail(format!("load() cycle: {}", chain.join(" → "))));
        }
        self.loading.borrow_mut().push(file.clone());
        let result = self.evaluate(&file, path);
        self.loading.borrow_mut().pop();
        let module = result?;
        self.loaded.borrow_mut().insert(file, module.clone());
        Ok(module)
    }
}
