//! After-render actions: how the application learns that its file changed, the way
//! spiffe-helper's `cmd`/`renew_signal` and Vault Agent's template `exec` do it.
//!
//! Either a command (argv, no shell, with a timeout; its environment is only
//! `PATH`, `S2IAM_DESTINATION` and what the config gives it — never a token unless
//! the config puts one there) or a signal to the process whose pid is in a file.
//! Actions run in their own task: a slow or failing one is logged with its exit
//! status and never delays a token refresh; the next change runs it again.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

/// The `PATH` an after-render command runs with when the sidecar has none.
pub const FALLBACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Default time an after-render command may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What to do when a file's contents change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run `argv[0]` with the rest as arguments, no shell.
    Command {
        /// The program and its arguments.
        argv: Vec<String>,
        /// Killed after this long.
        timeout: Duration,
        /// Its environment, besides `PATH` and `S2IAM_DESTINATION`.
        env: Vec<(String, String)>,
        /// Its `PATH`: the sidecar's own, read from the injected environment when
        /// the config is loaded (else [`FALLBACK_PATH`]).
        path: String,
    },
    /// Send `signal` to the pid written in `pid_file`.
    Signal {
        /// The signal.
        signal: Signal,
        /// A file holding the process id.
        pid_file: PathBuf,
    },
}

/// Why an action failed (logged, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The command could not be started.
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The command failed.
    #[error("{program:?} exited with {status}")]
    Exit {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
    },
    /// The command ran out of time.
    #[error("{program:?} did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The program.
        program: String,
        /// Its time limit.
        timeout: Duration,
    },
    /// The pid file is missing or holds no process id.
    #[error("cannot read pid file {path}: {message}")]
    PidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// kill(2) failed.
    #[error("cannot send {signal} to pid {pid} (from {path}): {source}")]
    Kill {
        /// The signal.
        signal: Signal,
        /// The process.
        pid: i32,
        /// Where the pid came from.
        path: PathBuf,
        /// Why.
        source: nix::Error,
    },
}

/// Parses `SIGHUP`, `HUP` or `hup`.
pub fn parse_signal(text: &str) -> Result<Signal, String> {
    let upper = text.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| format!("{text:?} is not a signal name (e.g. SIGHUP)"))
}

impl Action {
    /// Runs the action for the file at `destination`.
    pub async fn run(&self, destination: &Path) -> Result<(), ActionError> {
        match self {
            Action::Command {
                argv,
                timeout,
                env,
                path,
            } => run_command(argv, *timeout, env, path, destination).await,
            Action::Signal { signal, pid_file } => send_signal(*signal, pid_file),
        }
    }
}

/// Runs actions one at a time per file, in the background.
#[derive(Debug, Clone)]
pub struct ActionRunner {
    action: Action,
    destination: PathBuf,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl ActionRunner {
    /// A runner of `action` for the file at `destination`.
    pub fn new(action: Action, destination: PathBuf) -> Self {
        Self {
            action,
            destination,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Starts the action in its own task and returns at once.
    pub fn spawn(&self) -> tokio::task::JoinHandle<bool> {
        let this = self.clone();
        tokio::spawn(async move {
            // A second change while the first action runs waits for it.
            let _one_at_a_time = this.lock.lock().await;
            match this.action.run(&this.destination).await {
                Ok(()) => {
                    tracing::info!(file = %this.destination.display(), "after-render action done");
                    true
                }
                Err(e) => {
                    tracing::error!(file = %this.destination.display(), error = %e, "after-render action failed; it runs again on the next change");
                    false
                }
            }
        })
    }
}

async fn run_command(
    argv: &[String],
    timeout: Duration,
    env: &[(String, String)],
    path: &str,
    destination: &Path,
) -> Result<(), ActionError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", path)
        .env("S2IAM_DESTINATION", destination)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ActionError::Spawn {
        program: program.clone(),
        source,
    })?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(ActionError::Exit {
            program,
            status: status.to_string(),
        }),
        Ok(Err(source)) => Err(ActionError::Spawn { program, source }),
        Err(_) => {
            let _ = child.kill().await;
            Err(ActionError::Timeout { program, timeout })
        }
    }
}

fn send_signal(signal: Signal, pid_file: &Path) -> Result<(), ActionError> {
    let text = std::fs::read_to_string(pid_file).map_err(|e| ActionError::PidFile {
        path: pid_file.to_path_buf(),
        message: e.to_string(),
    })?;
    let pid = text
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| ActionError::PidFile {
            path: pid_file.to_path_buf(),
            message: format!(
                "{:?} is not a process id",
                s2iam::util::snippet(text.trim(), 40)
            ),
        })?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|source| {
        ActionError::Kill {
            signal,
            pid,
            path: pid_file.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("HUP").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("sigusr1").unwrap(), Signal::SIGUSR1);
        assert!(parse_signal("NOPE").is_err());
    }

    #[tokio::test]
    async fn command_failures_and_timeouts_are_reported() {
        let dest = Path::new("/tmp/x");
        let cmd = |argv: &[&str], ms| Action::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_millis(ms),
            env: vec![],
            path: FALLBACK_PATH.into(),
        };
        assert!(cmd(&["true"], 5000).run(dest).await.is_ok());
        let e = cmd(&["false"], 5000).run(dest).await.unwrap_err();
        assert!(e.to_string().contains("exit status: 1"), "{e}");
        let e = cmd(&["sleep", "5"], 100).run(dest).await.unwrap_err();
        assert!(matches!(e, ActionError::Timeout { .. }), "{e}");
        let e = cmd(&["/nonexistent/x"], 100).run(dest).await.unwrap_err();
        assert!(matches!(e, ActionError::Spawn { .. }), "{e}");
        // The environment is only what the action is given.
        let e = cmd(
            &[
                "sh",
                "-c",
                "test -z \"$HOME\" && test \"$S2IAM_DESTINATION\" = /tmp/x",
            ],
            5000,
        );
        assert!(e.run(dest).await.is_ok());
    }

    #[test]
    fn bad_pid_files_are_reported() {
        let e = send_signal(Signal::SIGHUP, Path::new("/nonexistent/pid")).unwrap_err();
        assert!(matches!(e, ActionError::PidFile { .. }), "{e}");
        let f = std::env::temp_dir().join(format!("s2iam-pid-{}", rand::random::<u32>()));
        std::fs::write(&f, "1\n").unwrap();
        assert!(send_signal(Signal::SIGHUP, &f).is_err(), "pid 1 is refused");
        std::fs::remove_file(&f).unwrap();
    }
}
