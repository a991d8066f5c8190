//! The child process of `s2iam run`: started with the tokens in its environment,
//! sent the signals `s2iam` receives, stopped gracefully (SIGTERM, then SIGKILL
//! after the grace period), and its exit status turned into ours.

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::RunError;

/// Signals `s2iam run` passes on to the child.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Starts `argv` with `env` added to this process's environment.
pub fn spawn(argv: &[String], env: &[(String, String)]) -> Result<Child, RunError> {
    let program = &argv[0];
    Command::new(program)
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .map_err(|source| RunError::Spawn {
            program: program.clone(),
            source,
        })
}

/// Sends `signal` to the child (if it still runs).
pub fn signal(child: &Child, signal: Signal) {
    if let Some(pid) = child.id() {
        if let Err(e) = nix::sys::signal::kill(Pid::from_raw(pid as i32), signal) {
            tracing::warn!(pid, %signal, error = %e, "cannot signal the child");
        }
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL. Returns how the child ended.
pub async fn stop(child: &mut Child, grace: Duration) -> std::io::Result<ExitStatus> {
    signal(child, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            tracing::warn!(pid = child.id(), grace = ?grace, "the child did not exit after SIGTERM; killing it");
            child.kill().await?;
            child.wait().await
        }
    }
}

/// The exit code a shell would report: the code, or 128 + the signal.
pub fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.saturating_add(sig as u8),
        _ => 1,
    }
}

/// Every forwarded signal this process receives, on one channel.
pub fn listen() -> Result<mpsc::UnboundedReceiver<Signal>, RunError> {
    let (tx, rx) = mpsc::unbounded_channel();
    for sig in FORWARDED {
        let mut stream =
            tokio::signal::unix::signal((sig as i32).into()).map_err(RunError::Signals)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        });
    }
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_codes_and_graceful_stop() {
        let mut c = spawn(&["sh".into(), "-c".into(), "exit 7".into()], &[]).unwrap();
        assert_eq!(exit_code(c.wait().await.unwrap()), 7);
        // Ignores SIGTERM: killed after the grace period.
        let mut c = spawn(
            &[
                "sh".into(),
                "-c".into(),
                "trap '' TERM; while :; do sleep 0.1; done".into(),
            ],
            &[],
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = stop(&mut c, Duration::from_millis(300)).await.unwrap();
        assert_eq!(exit_code(status), 128 + 9);
        let e = spawn(&["/nonexistent/program".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/program"), "{e}");
    }
}
