//! `s2iam run -- CMD`: tokens in the child's environment, exit codes, signal
//! forwarding, restart or signal on rotation, and the sidecar as the source.

// Tests and benches own their environment and clock (rule 4 is for the library).
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{
    eventually, mocks_with_expiry, s2iam_cmd as s2iam, signal, temp_dir, uds_get, wait_exit, Proc,
};
use s2iam_testserver::TestServer;

/// Verifies the JWT's RS256 signature with the mock auth service's key.
fn verified_claims(server: &TestServer, jwt: &str) -> serde_json::Value {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    server
        .auth()
        .key()
        .verify::<serde_json::Value>(jwt, &validation)
        .expect("a JWT signed by the auth service")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_puts_a_valid_jwt_in_the_environment_and_passes_the_exit_code() {
    let server = mocks_with_expiry(Duration::from_secs(3600)).await;
    let dir = temp_dir("run-env");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "[[token]]\ntype = \"database\"\nworkspace_group_id = \"wg-run\"\n",
    )
    .unwrap();
    // No options at all: the tokens come from S2IAM_CONFIG's [[token]].
    let out = s2iam(&server)
        .env("S2IAM_CONFIG", &config)
        .args(["run", "--", "sh", "-c", "echo $S2_PASSWORD"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwt = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let claims = verified_claims(&server, &jwt);
    assert_eq!(claims["workspaceGroupID"], "wg-run", "{claims}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("eyJ"));

    // Names chosen on the command line; the child's exit code is ours.
    let out = s2iam(&server)
        .args([
            "run",
            "--env",
            "DB=database:wg-2",
            "--env",
            "API=api",
            "--",
            "sh",
            "-c",
            "test -n \"$DB\" && test -n \"$API\" && test -z \"$S2_PASSWORD\" && exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s2iam(&server)
        .args([
            "run",
            "--workspace-group-id",
            "wg",
            "--",
            "/nonexistent/program",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    // No token, no child: 125 and the reason.
    server.auth().update(|c| c.return_error = true);
    let out = s2iam(&server)
        .args([
            "run",
            "--workspace-group-id",
            "wg",
            "--",
            "sh",
            "-c",
            "echo started",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(out.stdout.is_empty(), "the command never started");
    assert!(String::from_utf8_lossy(&out.stderr).contains("S2_PASSWORD"));
    server.shutdown().await;
}

/// `start|stop <pid> <ns> <token checksum>` lines written by the child.
#[derive(Debug)]
struct Event {
    kind: String,
    pid: u32,
    at_ns: u128,
    token: String,
}

fn events(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Event {
                kind: f.first()?.to_string(),
                pid: f.get(1)?.parse().ok()?,
                at_ns: f.get(2)?.parse().ok()?,
                token: f.get(3)?.to_string(),
            })
        })
        .collect()
}

const CHILD: &str = r#"tok=$(printf %s "$S2_PASSWORD" | cksum | cut -d' ' -f1)
echo "start $$ $(date +%s%N) $tok" >> "$LOG"
trap 'echo "stop $$ $(date +%s%N) $tok" >> "$LOG"; exit 0' TERM
trap 'echo "usr1 $$ $(date +%s%N) $tok" >> "$LOG"' USR1
while :; do sleep 0.05; done"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_the_child_with_fresh_tokens_before_they_expire() {
    let server = mocks_with_expiry(Duration::from_secs(4)).await;
    let dir = temp_dir("run-restart");
    let log = dir.join("events");
    let config = dir.join("config.toml");
    std::fs::write(&config, "[cache]\nrefresh_at = 0.5\n").unwrap();
    let grace = Duration::from_secs(2);
    let mut run = Proc(
        s2iam(&server)
            .env("LOG", &log)
            .args(["run", "--config"])
            .arg(&config)
            .args([
                "--workspace-group-id",
                "wg-rot",
                "--grace",
                "2s",
                "--",
                "sh",
                "-c",
                CHILD,
            ])
            .spawn()
            .unwrap(),
    );
    assert!(
        eventually(Duration::from_secs(30), async || events(&log)
            .iter()
            .filter(|e| e.kind == "start")
            .count()
            >= 3)
        .await,
        "restarted twice: {:?}",
        events(&log)
    );
    let ev = events(&log);
    let starts: Vec<&Event> = ev.iter().filter(|e| e.kind == "start").collect();
    for pair in starts.windows(2) {
        let (old, new) = (pair[0], pair[1]);
        assert_ne!(old.pid, new.pid, "a new process");
        assert_ne!(old.token, new.token, "with a fresh token");
        let stop = ev
            .iter()
            .find(|e| e.kind == "stop" && e.pid == old.pid)
            .expect("the old child got SIGTERM and stopped");
        let gap = Duration::from_nanos((new.at_ns.saturating_sub(stop.at_ns)) as u64);
        assert!(
            gap < grace,
            "gap between stop and start {gap:?} >= grace {grace:?}"
        );
    }
    // SIGTERM is forwarded; the child's exit code (0) is ours.
    signal(run.0.id(), "TERM");
    let status = wait_exit(&mut run.0, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
    let last = starts.last().unwrap().pid;
    assert!(
        events(&log)
            .iter()
            .any(|e| e.kind == "stop" && e.pid == last),
        "the child got the forwarded SIGTERM"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_mode_keeps_the_child_and_signals_it() {
    let server = mocks_with_expiry(Duration::from_secs(3)).await;
    let dir = temp_dir("run-signal");
    let log = dir.join("events");
    let config = dir.join("config.toml");
    std::fs::write(&config, "[cache]\nrefresh_at = 0.5\n").unwrap();
    let mut run = Proc(
        s2iam(&server)
            .env("LOG", &log)
            .args(["run", "--config"])
            .arg(&config)
            .args([
                "--workspace-group-id",
                "wg-sig",
                "--on-expiry",
                "signal",
                "--signal",
                "USR1",
                "--",
                "sh",
                "-c",
                CHILD,
            ])
            .spawn()
            .unwrap(),
    );
    assert!(
        eventually(Duration::from_secs(20), async || events(&log)
            .iter()
            .filter(|e| e.kind == "usr1")
            .count()
            >= 2)
        .await
    );
    let ev = events(&log);
    assert_eq!(ev.iter().filter(|e| e.kind == "start").count(), 1, "{ev:?}");
    assert!(ev.iter().all(|e| e.pid == ev[0].pid));
    signal(run.0.id(), "TERM");
    assert_eq!(
        wait_exit(&mut run.0, Duration::from_secs(10)).await.code(),
        Some(0)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_failing_after_a_restart_is_restarted_with_backoff() {
    let server = mocks_with_expiry(Duration::from_secs(3)).await;
    let dir = temp_dir("run-crash");
    let (log, marker) = (dir.join("starts"), dir.join("marker"));
    let config = dir.join("config.toml");
    std::fs::write(&config, "[cache]\nrefresh_at = 0.5\n").unwrap();
    // Runs the first time; every later start fails at once.
    let script = format!(
        "date +%s%N >> {log}; if [ -e {marker} ]; then exit 9; fi; touch {marker}; trap 'exit 0' TERM; while :; do sleep 0.05; done",
        log = log.display(),
        marker = marker.display()
    );
    let mut run = Proc(
        s2iam(&server)
            .args(["run", "--config"])
            .arg(&config)
            .args([
                "--workspace-group-id",
                "wg-crash",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .spawn()
            .unwrap(),
    );
    let starts = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(eventually(Duration::from_secs(20), async || starts() >= 2).await);
    // After the first failed restart: 1 s, then 2 s before the next attempts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let n = starts();
    // A tight loop would be hundreds; rotations (every 1.5 s here) add a few.
    assert!(
        (3..=8).contains(&n),
        "{n} starts: backoff, not a tight loop"
    );
    assert!(run.0.try_wait().unwrap().is_none(), "still trying");
    signal(run.0.id(), "TERM");
    assert_eq!(
        wait_exit(&mut run.0, Duration::from_secs(10)).await.code(),
        Some(9),
        "the failed child's exit code"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_can_take_its_tokens_from_a_running_sidecar() {
    let server = mocks_with_expiry(Duration::from_secs(3600)).await;
    let dir = temp_dir("run-sidecar");
    let socket = dir.join("s2iam.sock");
    let _sidecar = Proc(
        s2iam(&server)
            .args(["serve", "--socket"])
            .arg(&socket)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        eventually(Duration::from_secs(20), async || socket.exists()
            && uds_get(&socket, "/readyz").await.0 == 200)
        .await
    );
    // No auth service settings at all: only the socket.
    let out = Command::new(env!("CARGO_BIN_EXE_s2iam"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["run", "--socket"])
        .arg(&socket)
        .args([
            "--workspace-group-id",
            "wg-side",
            "--",
            "sh",
            "-c",
            "echo $S2_PASSWORD",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwt = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(
        verified_claims(&server, &jwt)["workspaceGroupID"],
        "wg-side"
    );
    let from_sidecar = server
        .auth()
        .records()
        .iter()
        .filter(|r| r.workspace_group_id.as_deref() == Some("wg-side"))
        .count();
    assert_eq!(from_sidecar, 1, "the sidecar did the one exchange");
    server.shutdown().await;
}

/// Issue 18, item 10: a stop signal sent to `s2iam run` reaches the child, and a
/// child that ignores it is killed `--grace` later: `s2iam run` never waits
/// forever (it did, whatever `--grace` said, which only applied on rotation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_signal_is_forwarded_then_grace_then_sigkill() {
    let server = mocks_with_expiry(Duration::from_secs(3600)).await;
    for sig in ["TERM", "INT"] {
        let dir = temp_dir("run-stop");
        let seen = dir.join("seen");
        // Records the signals it gets and goes on regardless.
        let script = format!(
            "trap 'echo TERM >> {0}' TERM; trap 'echo INT >> {0}' INT; echo ready >> {0}; while :; do sleep 0.1; done",
            seen.display()
        );
        let mut child = Proc(
            s2iam(&server)
                .args([
                    "run", "--grace", "1s", "--env", "T=api", "--", "sh", "-c", &script,
                ])
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let ready = || std::fs::read_to_string(&seen).unwrap_or_default();
        assert!(
            eventually(Duration::from_secs(20), async || ready().contains("ready")).await,
            "child started"
        );
        signal(child.0.id(), sig);
        let status = wait_exit(&mut child.0, Duration::from_secs(20)).await;
        assert_eq!(
            status.code(),
            Some(128 + 9),
            "{sig}: the child was killed: {status:?}"
        );
        assert!(
            ready().contains(sig),
            "{sig} reached the child: {:?}",
            ready()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    server.shutdown().await;
}
