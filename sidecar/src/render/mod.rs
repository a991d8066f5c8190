//! Templates: files rendered from the current tokens and identity, for
//! applications that read a config file (a MySQL option file, a `.env`, a JSON
//! config, a connection URL) rather than a bare token.
//!
//! Each `[[template]]` is compiled once at start with [minijinja] (Jinja2 syntax,
//! strict undefined: a misspelt name is an error, never an empty string) and
//! rendered with placeholder values by `s2iam serve --check` and at start, so
//! mistakes are reported with line and column before any token is fetched. In the
//! sidecar every template is re-rendered whenever a token is refreshed and written
//! (atomically, see [`s2iam::util::atomic_file`]) only when its output changed; then its
//! after-render [`action`] runs. Only a hash of the last output is kept in memory.
//!
//! What a template can read: [`context`].

pub mod action;
pub mod config;
pub mod context;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use sha2::{Digest, Sha256};

use action::{Action, ActionRunner};
use context::{Available, Values};
use s2iam::util::atomic_file::{self as sinks, FileOptions};

/// One configured template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    /// For messages: the source file, or `template[i]` for inline text.
    pub name: String,
    /// The template text.
    pub source: String,
    /// The file it is rendered into.
    pub destination: PathBuf,
    /// The directory trusted as given (`root`, default `/`): no directory below
    /// it on the way to `destination` may be a symlink.
    pub root: PathBuf,
    /// Mode, owner and group of that file.
    pub file: FileOptions,
    /// What to run when the file changed.
    pub on_change: Option<Action>,
}

/// A template that cannot be compiled or rendered. Never holds a token: at run
/// time only the kind of error and the template's own text are reported.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TemplateError {
    /// An error at a place in the template.
    #[error("{name}, line {line}, column {column}: {message}")]
    At {
        /// The template.
        name: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (characters).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// An error without a place (a destination that cannot be written).
    #[error("{name}: {message}")]
    Other {
        /// The template.
        name: String,
        /// What is wrong.
        message: String,
    },
}

struct Entry {
    spec: TemplateSpec,
    /// SHA-256 of the last output written.
    last: Mutex<Option<[u8; 32]>>,
    rendered: AtomicBool,
    action: Option<ActionRunner>,
}

/// The compiled templates of a configuration.
pub struct Renderer {
    env: Environment<'static>,
    entries: Vec<Entry>,
    needs_identity: bool,
}

/// What happened to one template in a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The output changed and the file was written.
    Written,
    /// The output is what was last written: nothing done.
    Unchanged,
}

impl Renderer {
    /// Compiles every template (syntax errors come out here).
    pub fn new(specs: Vec<TemplateSpec>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env.set_debug(true);
        let mut needs_identity = false;
        for spec in &specs {
            env.add_template_owned(spec.name.clone(), spec.source.clone())
                .map_err(|e| error(&spec.name, &spec.source, &e, true))?;
            let t = env
                .get_template(&spec.name)
                .map_err(|e| error(&spec.name, &spec.source, &e, true))?;
            needs_identity |= t.undeclared_variables(false).contains("identity");
        }
        let entries = specs
            .into_iter()
            .map(|spec| Entry {
                action: spec
                    .on_change
                    .clone()
                    .map(|a| ActionRunner::new(a, spec.destination.clone())),
                spec,
                last: Mutex::new(None),
                rendered: AtomicBool::new(false),
            })
            .collect();
        Ok(Self {
            env,
            entries,
            needs_identity,
        })
    }

    /// No templates configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether any template reads `identity` (a cloud call the renderer can skip).
    pub fn needs_identity(&self) -> bool {
        self.needs_identity
    }

    /// Renders every template with placeholders for what `available` names, and
    /// checks every destination: all problems, each with its location.
    pub fn check(&self, available: &Available) -> Result<(), Vec<TemplateError>> {
        let ctx = Values::placeholders(available).context();
        let mut problems = Vec::new();
        for e in &self.entries {
            if let Err(err) = self.render_one(e, &ctx, true) {
                problems.push(err);
            }
            if let Err(message) = sinks::check_destination_under(&e.spec.root, &e.spec.destination)
            {
                problems.push(TemplateError::Other {
                    name: e.spec.name.clone(),
                    message: format!("destination: {message}"),
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn render_one(
        &self,
        e: &Entry,
        ctx: &serde_json::Value,
        detailed: bool,
    ) -> Result<String, TemplateError> {
        let t = self
            .env
            .get_template(&e.spec.name)
            .map_err(|err| error(&e.spec.name, &e.spec.source, &err, detailed))?;
        t.render(ctx)
            .map_err(|err| error(&e.spec.name, &e.spec.source, &err, detailed))
    }

    /// Renders every template with `values`, writes those whose output changed
    /// and, when `actions` is set, starts their after-render actions. One result
    /// per template, in configuration order.
    pub async fn write_changed(
        &self,
        values: &Values,
        actions: bool,
    ) -> Vec<(String, Result<Outcome, String>)> {
        let ctx = values.context();
        let mut results = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let outcome = self.write_one(e, &ctx, actions).await;
            results.push((e.spec.name.clone(), outcome));
        }
        results
    }

    async fn write_one(
        &self,
        e: &Entry,
        ctx: &serde_json::Value,
        actions: bool,
    ) -> Result<Outcome, String> {
        let output = self
            .render_one(e, ctx, false)
            .map_err(|err| err.to_string())?;
        let hash: [u8; 32] = Sha256::digest(output.as_bytes()).into();
        if *lock(&e.last) == Some(hash) {
            return Ok(Outcome::Unchanged);
        }
        let (root, path, opts) = (e.spec.root.clone(), e.spec.destination.clone(), e.spec.file);
        tokio::task::spawn_blocking(move || {
            sinks::write_file_under(&root, &path, output.as_bytes(), &opts)
        })
        .await
        .map_err(|err| format!("writer task failed: {err}"))?
        .map_err(|err| format!("cannot write {}: {err}", e.spec.destination.display()))?;
        *lock(&e.last) = Some(hash);
        e.rendered.store(true, Ordering::Relaxed);
        tracing::info!(template = %e.spec.name, destination = %e.spec.destination.display(), "template rendered");
        if let (true, Some(action)) = (actions, &e.action) {
            action.spawn();
        }
        Ok(Outcome::Written)
    }

    /// Templates not written yet (for `/readyz`).
    pub fn not_rendered(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| !e.rendered.load(Ordering::Relaxed))
            .map(|e| e.spec.name.clone())
            .collect()
    }
}

/// A minijinja error as a [`TemplateError`], with line and column. `detailed`
/// (placeholder renders only) adds the engine's detail, which at run time could
/// quote a value.
fn error(name: &str, source: &str, e: &minijinja::Error, detailed: bool) -> TemplateError {
    let mut message = e.kind().to_string();
    if let (true, Some(d)) = (detailed, e.detail()) {
        message = format!("{message}: {d}");
    }
    let range = e
        .range()
        .filter(|r| r.end <= source.len() && r.start <= r.end);
    if let Some(r) = &range {
        let text = &source[r.clone()];
        if !text.is_empty() && text.len() <= 120 {
            message = format!("{message} (at `{text}`)");
        }
    }
    match (e.line(), range) {
        (Some(line), Some(r)) => {
            let line_start = source[..r.start]
                .rfind('\n')
                .map_or(0, |i| i.saturating_add(1));
            TemplateError::At {
                name: name.to_string(),
                line,
                column: source[line_start..r.start]
                    .chars()
                    .count()
                    .saturating_add(1),
                message,
            }
        }
        (Some(line), None) => TemplateError::At {
            name: name.to_string(),
            line,
            column: 1,
            message,
        },
        _ => TemplateError::Other {
            name: name.to_string(),
            message,
        },
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: &str, destination: PathBuf) -> TemplateSpec {
        TemplateSpec {
            name: "t.j2".into(),
            source: source.into(),
            destination,
            root: PathBuf::from("/"),
            file: FileOptions::mode(0o600),
            on_change: None,
        }
    }

    fn available() -> Available {
        Available {
            workspace_groups: vec!["wg-1".into()],
            api: false,
            aws_profiles: vec![],
        }
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let err = Renderer::new(vec![spec("a\nb {{ x }\n", "/tmp/x".into())])
            .err()
            .unwrap();
        let TemplateError::At { line, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*line, 2, "{err}");
    }

    #[test]
    fn unknown_variables_are_errors_with_location() {
        let src = "[client]\npassword={{ database[\"wg-1\"].token }}\nhost={{ databse.host }}\n";
        let r = Renderer::new(vec![spec(src, std::env::temp_dir().join("x"))]).unwrap();
        let errs = r.check(&available()).unwrap_err();
        let TemplateError::At {
            line,
            column,
            message,
            ..
        } = &errs[0]
        else {
            panic!("{:?}", errs)
        };
        assert_eq!((*line, *column), (3, 9), "{message}");
        assert!(message.contains("undefined"), "{message}");
        // An unconfigured workspace group is undefined too.
        let r = Renderer::new(vec![spec(
            "{{ database[\"other\"].token }}",
            std::env::temp_dir().join("x"),
        )])
        .unwrap();
        assert!(r.check(&available()).is_err());
        // A destination in a missing directory is refused.
        let r = Renderer::new(vec![spec("x", "/nonexistent/a/b".into())]).unwrap();
        let errs = r.check(&available()).unwrap_err();
        assert!(
            errs[0].to_string().contains("does not exist"),
            "{}",
            errs[0]
        );
    }

    #[tokio::test]
    async fn writes_only_when_the_output_changes() {
        let dir = std::env::temp_dir().join(format!("s2iam-tpl-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("out");
        let r = Renderer::new(vec![spec(
            "p={{ database[\"wg-1\"].token }}\n",
            dest.clone(),
        )])
        .unwrap();
        assert!(!r.needs_identity());
        assert_eq!(r.not_rendered(), vec!["t.j2".to_string()]);
        let mut v = Values::placeholders(&available());
        let first = r.write_changed(&v, false).await;
        assert_eq!(first[0].1, Ok(Outcome::Written));
        assert_eq!(
            r.write_changed(&v, false).await[0].1,
            Ok(Outcome::Unchanged)
        );
        v.database.get_mut("wg-1").unwrap().token = s2iam::secret::Secret::new("new");
        assert_eq!(r.write_changed(&v, false).await[0].1, Ok(Outcome::Written));
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "p=new\n");
        assert!(r.not_rendered().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
