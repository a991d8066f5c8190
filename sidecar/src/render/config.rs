//! The `[[template]]` tables, and the owner/group/action settings of token sinks,
//! as they appear in the config file, validated into [`TemplateSpec`]s.
//!
//! ```toml
//! [[template]]
//! source = "/etc/s2iam/templates/my.cnf.j2"   # or: contents = "..." (inline)
//! destination = "/run/s2iam/my.cnf"
//! root = "/run/s2iam"                          # default "/": no symlink below it
//! mode = "0640"                                # default 0640
//! owner = "app"                                # name or number; default: unchanged
//! group = 10001
//! [template.on_change]                         # optional: tell the app
//! command = ["/usr/bin/pkill", "-HUP", "-x", "myapp"]   # argv, no shell
//! timeout = "30s"
//! env = { APP_ENV = "prod" }                   # the command's environment (plus PATH)
//! # or: signal = "SIGHUP", pid_file = "/run/app/app.pid"
//!
//! [[token]]
//! type = "database"
//! workspace_group_id = "wg-1"
//! sink = "/run/s2iam/db.jwt"
//! sink_owner = "app"
//! sink_group = "app"
//! [token.on_change]
//! signal = "SIGHUP"
//! pid_file = "/run/app/app.pid"
//! ```
//!
//! At load every template is compiled and rendered with placeholder values
//! ([`super::Renderer::check`]), so a bad template stops `--check` and start-up.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::action::{parse_signal, Action, DEFAULT_TIMEOUT};
use super::context::Available;
use super::{Renderer, TemplateSpec};
use s2iam::util::atomic_file::{resolve_group, resolve_user, FileOptions};

/// Default mode of a rendered file.
pub const DEFAULT_MODE: u32 = 0o640;

/// `on_change.timeout`: how long a command may run (the refresher waits for it).
pub const ACTION_TIMEOUT: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(3600);

/// A setting that is not valid: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Where: `template[0].mode`, `token[1].on_change.signal`, ...
    pub setting: String,
    /// What is wrong.
    pub message: String,
}

fn invalid(setting: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        setting: setting.to_string(),
        message: message.into(),
    }
}

/// A user or group: a number or a name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IdOrName {
    /// A uid or gid.
    Id(u32),
    /// A user or group name (or a number written as a string).
    Name(String),
}

/// `[[template]]` in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTemplate {
    source: Option<PathBuf>,
    contents: Option<String>,
    destination: PathBuf,
    root: Option<PathBuf>,
    mode: Option<String>,
    owner: Option<IdOrName>,
    group: Option<IdOrName>,
    on_change: Option<FileAction>,
}

/// `on_change` of a template or token sink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAction {
    command: Option<Vec<String>>,
    timeout: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    signal: Option<String>,
    pid_file: Option<PathBuf>,
}

/// Validates the `[[template]]`s, compiles them and renders each with
/// placeholders for what `available` names.
/// `path` is the `PATH` after-render commands run with.
pub fn templates(
    files: Vec<FileTemplate>,
    available: &Available,
    path: &str,
) -> Result<Vec<TemplateSpec>, Invalid> {
    let mut specs = Vec::with_capacity(files.len());
    for (i, t) in files.into_iter().enumerate() {
        specs.push(template(i, t, path)?);
    }
    for (i, a) in specs.iter().enumerate() {
        if specs[..i].iter().any(|b| b.destination == a.destination) {
            return Err(invalid(
                &format!("template[{i}].destination"),
                format!(
                    "{} is the destination of another template",
                    a.destination.display()
                ),
            ));
        }
    }
    let renderer = Renderer::new(specs.clone()).map_err(|e| invalid("template", e.to_string()))?;
    renderer.check(available).map_err(|errors| {
        invalid(
            "template",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    Ok(specs)
}

fn template(i: usize, t: FileTemplate, path: &str) -> Result<TemplateSpec, Invalid> {
    let setting = format!("template[{i}]");
    let (name, source) = match (t.source, t.contents) {
        (Some(path), None) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                invalid(
                    &format!("{setting}.source"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            (format!("{setting} ({})", path.display()), text)
        }
        (None, Some(text)) => (setting.clone(), text),
        _ => {
            return Err(invalid(
                &setting,
                "give exactly one of source (a file) or contents (inline text)",
            ))
        }
    };
    if t.destination.file_name().is_none() || !t.destination.is_absolute() {
        return Err(invalid(
            &format!("{setting}.destination"),
            format!("{} is not an absolute file path", t.destination.display()),
        ));
    }
    let root = t.root.unwrap_or_else(|| PathBuf::from("/"));
    if !root.is_absolute() || !t.destination.starts_with(&root) || t.destination == root {
        return Err(invalid(
            &format!("{setting}.root"),
            format!(
                "{} must be an absolute directory that contains the destination {}",
                root.display(),
                t.destination.display()
            ),
        ));
    }
    let file = file_options(
        &setting,
        ("mode", t.mode.as_deref()),
        ("owner", t.owner.as_ref()),
        ("group", t.group.as_ref()),
    )?;
    let on_change = t
        .on_change
        .map(|a| action(&format!("{setting}.on_change"), a, path))
        .transpose()?;
    Ok(TemplateSpec {
        name,
        source,
        destination: t.destination,
        root,
        file,
        on_change,
    })
}

/// Mode, owner and group of a file, each named `prefix.<name>` in errors.
pub fn file_options(
    prefix: &str,
    (mode_name, mode): (&str, Option<&str>),
    (owner_name, owner): (&str, Option<&IdOrName>),
    (group_name, group): (&str, Option<&IdOrName>),
) -> Result<FileOptions, Invalid> {
    let mode = match mode {
        None => DEFAULT_MODE,
        Some(v) => u32::from_str_radix(v.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                invalid(
                    &format!("{prefix}.{mode_name}"),
                    format!("{v:?} is not an octal file mode like \"0640\""),
                )
            })?,
    };
    let id = |name: &str, v: Option<&IdOrName>, resolve: fn(&str) -> Result<u32, String>| {
        let setting = format!("{prefix}.{name}");
        v.map(|v| match v {
            IdOrName::Id(n) => Ok(*n),
            IdOrName::Name(s) => resolve(s).map_err(|m| invalid(&setting, m)),
        })
        .transpose()?
        // (uid_t)-1 is what chown(2) reads as "leave unchanged": never an id.
        .map(|n| match n {
            u32::MAX => Err(invalid(
                &setting,
                "4294967295 is outside 0 ..= 4294967294 (chown reads -1 as \"unchanged\")",
            )),
            n => Ok(n),
        })
        .transpose()
    };
    Ok(FileOptions {
        mode,
        owner: id(owner_name, owner, resolve_user)?,
        group: id(group_name, group, resolve_group)?,
    })
}

/// Validates an `on_change` table; a command runs with `path` as its `PATH`.
pub fn action(setting: &str, a: FileAction, path: &str) -> Result<Action, Invalid> {
    match (a.command, a.signal) {
        (Some(argv), None) => {
            if a.pid_file.is_some() {
                return Err(invalid(
                    &format!("{setting}.pid_file"),
                    "goes with signal, not command",
                ));
            }
            if argv.first().is_none_or(|p| p.trim().is_empty()) {
                return Err(invalid(
                    &format!("{setting}.command"),
                    "must name a program: [\"/path/to/program\", \"arg\", ...]",
                ));
            }
            let timeout = match &a.timeout {
                None => DEFAULT_TIMEOUT,
                Some(t) => s2iam::util::parse_duration(t)
                    .map_err(|e| invalid(&format!("{setting}.timeout"), e.to_string()))?,
            };
            if !ACTION_TIMEOUT.contains(&timeout) {
                return Err(invalid(
                    &format!("{setting}.timeout"),
                    format!(
                        "{} is outside 100ms ..= 1h",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            Ok(Action::Command {
                argv,
                timeout,
                env: a.env.into_iter().collect(),
                path: path.to_string(),
            })
        }
        (None, Some(signal)) => {
            if a.timeout.is_some() || !a.env.is_empty() {
                return Err(invalid(
                    setting,
                    "timeout and env go with command, not signal",
                ));
            }
            let signal =
                parse_signal(&signal).map_err(|e| invalid(&format!("{setting}.signal"), e))?;
            let pid_file = a.pid_file.ok_or_else(|| {
                invalid(
                    &format!("{setting}.pid_file"),
                    "required with signal: the file holding the process id",
                )
            })?;
            Ok(Action::Signal { signal, pid_file })
        }
        _ => Err(invalid(
            setting,
            "give exactly one of command = [argv...] or signal = \"SIGHUP\" (with pid_file)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<TemplateSpec>, Invalid> {
        #[derive(Deserialize)]
        struct F {
            template: Vec<FileTemplate>,
        }
        let f: F = toml::from_str(text).map_err(|e| invalid("toml", e.to_string()))?;
        templates(
            f.template,
            &Available {
                workspace_groups: vec!["wg-1".into()],
                api: true,
                aws_profiles: vec!["analytics".into()],
            },
            super::super::action::FALLBACK_PATH,
        )
    }

    #[test]
    fn full_template_parses() {
        let specs = parse(
            r#"
            [[template]]
            contents = "{{ api.token }} {{ aws.analytics.secret_access_key }} {{ identity.principal }}"
            destination = "/tmp/s2iam-template-test"
            mode = "0600"
            owner = 0
            group = "0"
            [template.on_change]
            command = ["true"]
            timeout = "5s"
            env = { A = "b" }
            "#,
        )
        .unwrap();
        assert_eq!(
            specs[0].file,
            FileOptions {
                mode: 0o600,
                owner: Some(0),
                group: Some(0)
            }
        );
        assert!(matches!(specs[0].on_change, Some(Action::Command { .. })));
    }

    #[test]
    fn bad_templates_name_themselves() {
        let d = "destination = \"/tmp/s2iam-t\"";
        let cases = [
            (format!("contents = \"x\"\n{d}\nmode = \"9\""), "template[0].mode"),
            (d.to_string(), "exactly one of source"),
            ("contents = \"x\"\ndestination = \"rel\"".to_string(), "absolute"),
            (format!("contents = \"x\"\n{d}\nroot = \"/var\""), "template[0].root"),
            (format!("contents = \"x\"\n{d}\nroot = \"tmp\""), "template[0].root"),
            (format!("contents = \"x\"\n{d}\nroot = \"/tmp/s2iam-t\""), "template[0].root"),
            (format!("contents = \"x\"\n{d}\nowner = 4294967295"), "template[0].owner"),
            (format!("contents = \"x\"\n{d}\nowner = \"no-such-user-s2iam\""), "template[0].owner"),
            (format!("source = \"/nonexistent.j2\"\n{d}"), "template[0].source"),
            (format!("contents = \"{{{{ nope }}}}\"\n{d}"), "line 1, column 4"),
            (format!("contents = \"{{% if %}}\"\n{d}"), "line 1"),
            (format!("contents = \"x\"\n{d}\n[template.on_change]\nsignal = \"HUP\""), "pid_file"),
            (format!("contents = \"x\"\n{d}\n[template.on_change]\nsignal = \"NOPE\"\npid_file = \"/x\""), "on_change.signal"),
            (format!("contents = \"x\"\n{d}\n[template.on_change]\ncommand = []"), "on_change.command"),
            (format!("contents = \"x\"\n{d}\n[template.on_change]\ncommand = [\"x\"]\nsignal = \"HUP\""), "exactly one of command"),
            (format!("contents = \"x\"\n{d}\n[[template]]\ncontents = \"y\"\n{d}"), "another template"),
        ];
        for (body, needle) in cases {
            let err = parse(&format!("[[template]]\n{body}")).unwrap_err();
            let text = format!("{}: {}", err.setting, err.message);
            assert!(text.contains(needle), "{body}\n=> {text}");
        }
    }
}
