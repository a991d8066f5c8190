//! Every numeric setting has a range (issue 18, item 7): each one in the config
//! file and on the command line is fed its extreme values (0, the maximum, one
//! past it, u64::MAX, negative) through the real binary, both `serve --check`
//! and the start path. Accepted values start and stop cleanly; refused ones
//! end with an error naming the setting; nothing ever panics (exit 101).
//! `[[database_proxy]] max_connections = 2305843009213693952` passed `--check`
//! and then panicked in tokio's semaphore.

use crate::common;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{mocks, temp_dir};
use s2iam_testserver::{CloudConfig, TestServer};
use tokio::process::Command;

const U64_MAX: &str = "18446744073709551615";

/// Where a setting is given.
enum Surface {
    /// A config file for `s2iam serve` (`{v}` the value, `{dir}` a directory).
    File(&'static str),
    /// Arguments of the binary (`{v}`, `{dir}`).
    Flags(&'static [&'static str]),
}

struct Case {
    setting: &'static str,
    surface: Surface,
    accepted: &'static [&'static str],
    refused: &'static [&'static str],
}

const fn file(
    setting: &'static str,
    toml: &'static str,
    accepted: &'static [&'static str],
    refused: &'static [&'static str],
) -> Case {
    Case {
        setting,
        surface: Surface::File(toml),
        accepted,
        refused,
    }
}

const fn flags(
    setting: &'static str,
    args: &'static [&'static str],
    accepted: &'static [&'static str],
    refused: &'static [&'static str],
) -> Case {
    Case {
        setting,
        surface: Surface::Flags(args),
        accepted,
        refused,
    }
}

const COUNT_REFUSED: &[&str] = &["0", "100001", "2305843009213693952", U64_MAX, "-1"];
const MODE_REFUSED: &[&str] = &["01000", U64_MAX, "-1", "0o7777"];
const UID_REFUSED: &[&str] = &["4294967296", U64_MAX, "-1"];
const DB: &str = "[[database_proxy]]\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:9\"\nworkspace_group_id = \"wg\"\n";
const API: &str =
    "[[api_proxy]]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:9/api\"\ntoken = \"api\"\n";
const PROXY: &[&str] = &[
    "proxy",
    "--listen",
    "127.0.0.1:0",
    "--upstream",
    "127.0.0.1:9",
    "--workspace-group-id",
    "wg",
];

const AZURE_TOKEN: &str = "--provider=azure";
const AZURE_ENV_RETRIES: &[&str] = &[
    "ENV:S2IAM_AZURE_MI_RETRIES={v}",
    AZURE_TOKEN,
    "--jwt-type",
    "api",
    "--timeout",
    "2s",
];
const AZURE_ENV_BACKOFF: &[&str] = &[
    "ENV:S2IAM_AZURE_MI_RETRIES=2",
    "ENV:S2IAM_AZURE_MI_BACKOFF_MS={v}",
    AZURE_TOKEN,
    "--jwt-type",
    "api",
    "--timeout",
    "2s",
];
const AZURE_ENV_CLI: &[&str] = &[
    "ENV:S2IAM_AZURE_CLI=/bin/false",
    "ENV:S2IAM_AZURE_CLI_TIMEOUT={v}",
    AZURE_TOKEN,
    "--jwt-type",
    "api",
    "--timeout",
    "2s",
];

fn cases() -> Vec<Case> {
    let db = |field: &str| format!("{DB}{field}");
    let api = |field: &str| format!("{API}{field}");
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let proxy = |flag: &str| -> &'static [&'static str] {
        let mut v: Vec<&'static str> = PROXY.to_vec();
        v.push(leak(format!("{flag}={{v}}")));
        Box::leak(v.into_boxed_slice())
    };
    vec![
        // [listen]
        file("listen.max_connections", "[listen]\nmax_connections = {v}", &["1", "100000"], COUNT_REFUSED),
        file("listen.max_connections_per_uid", "[listen]\nmax_connections = 100000\nmax_connections_per_uid = {v}", &["1", "100000"], COUNT_REFUSED),
        file("listen.max_header_bytes", "[listen]\nmax_header_bytes = {v}", &["1024", "1048576"], &["0", "1023", "1048577", U64_MAX, "-1"]),
        file("listen.header_read_timeout", "[listen]\nheader_read_timeout = \"{v}\"", &["1ms", "24h"], &["0", "24h1s", U64_MAX, "-1"]),
        file("listen.idle_timeout", "[listen]\nidle_timeout = \"{v}\"", &["1ms", "24h"], &["0", "24h1s", U64_MAX, "-1"]),
        file("listen.shutdown_timeout", "[listen]\nshutdown_timeout = \"{v}\"", &["1ms", "24h"], &["0", "24h1s", U64_MAX, "-1"]),
        file("listen.socket_mode", "[listen]\nsocket_mode = \"{v}\"", &["0600", "0777"], MODE_REFUSED),
        file("listen.allowed_uids", "[listen]\nallowed_uids = [{v}]", &["0", "0, 4294967295"], UID_REFUSED),
        // [auth], [identity]
        file("auth.timeout", "[auth]\ntimeout = \"{v}\"", &["100ms", "10m"], &["0", "99ms", "601s", U64_MAX, "-1"]),
        file("identity.detect_timeout", "[identity]\ndetect_timeout = \"{v}\"", &["100ms", "10m"], &["0", "99ms", "601s", U64_MAX, "-1"]),
        file("identity.startup_timeout", "[identity]\nstartup_timeout = \"{v}\"", &["0", "24h"], &["24h1s", U64_MAX, "-1"]),
        // [cache]
        file("cache.refresh_at", "[cache]\nrefresh_at = {v}", &["0.1", "0.95"], &["0", "0.96", "1e308", "-1", "nan", "inf", U64_MAX]),
        file("cache.jitter", "[cache]\njitter = {v}", &["0.0", "0.2"], &["0.21", "-0.1", "nan", "inf", U64_MAX]),
        file("cache.min_remaining", "[cache]\nmin_remaining = \"{v}\"", &["0", "30m"], &["30m1s", U64_MAX, "-1"]),
        file("cache.idle_evict", "[cache]\nidle_evict = \"{v}\"", &["1s", "7d"], &["0", "7d1s", U64_MAX, "-1"]),
        file("cache.tick", "[cache]\ntick = \"{v}\"", &["10ms", "60s"], &["0", "9ms", "61s", U64_MAX, "-1"]),
        file("cache.max_on_demand", "[cache]\nmax_on_demand = {v}", &["1", "1000000"], &["0", "1000001", U64_MAX, "-1"]),
        file("cache.negative_ttl", "[cache]\nnegative_ttl = \"{v}\"", &["0", "1h"], &["1h1s", U64_MAX, "-1"]),
        // [access]
        file("access.cold_fetches_per_second", "[access]\ncold_fetches_per_second = {v}", &["1", "100000"], &["0", "100001", "4294967296", U64_MAX, "-1"]),
        file("access.cold_fetches_per_caller_per_second", "[access]\ncold_fetches_per_caller_per_second = {v}", &["1", "100000"], &["0", "100001", "4294967296", U64_MAX, "-1"]),
        // [aws], [[aws_profile]]
        file("aws.min_remaining", "[aws]\nmin_remaining = \"{v}\"", &["5m", "6h"], &["0", "4m59s", "6h1s", U64_MAX, "-1"]),
        file("aws.authorization_token_mode", "[aws]\nauthorization_token_file = \"{dir}/aws-token\"\nauthorization_token_mode = \"{v}\"", &["0600", "0777"], MODE_REFUSED),
        file("aws_profile[0] (p).duration", "[[aws_profile]]\nname = \"p\"\nsource = \"assume_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\nduration = \"{v}\"", &["15m", "12h"], &["0", "14m59s", "12h1s", U64_MAX, "-1"]),
        // [[token]], [[template]]
        file("token[0].sink_mode", "[[token]]\ntype = \"api\"\nsink = \"{dir}/tok\"\nsink_mode = \"{v}\"", &["0600", "0777"], MODE_REFUSED),
        file("token[0].sink_owner", "[[token]]\ntype = \"api\"\nsink = \"{dir}/tok\"\nsink_owner = {v}", &["0", "4294967294"], &["4294967295", "4294967296", U64_MAX, "-1"]),
        file("template[0].mode", "[[template]]\ncontents = \"x\"\ndestination = \"{dir}/t\"\nmode = \"{v}\"", &["0600", "0777"], MODE_REFUSED),
        file("template[0].group", "[[template]]\ncontents = \"x\"\ndestination = \"{dir}/t\"\ngroup = {v}", &["0", "4294967294"], &["4294967295", "4294967296", U64_MAX, "-1"]),
        file("template[0].on_change.timeout", "[[template]]\ncontents = \"x\"\ndestination = \"{dir}/t\"\n[template.on_change]\ncommand = [\"true\"]\ntimeout = \"{v}\"", &["100ms", "1h"], &["0", "99ms", "1h1s", U64_MAX, "-1"]),
        // [[database_proxy]]
        file("database_proxy[0].max_connections", leak(db("max_connections = {v}")), &["1", "100000"], COUNT_REFUSED),
        file("database_proxy[0].connect_timeout", leak(db("connect_timeout = \"{v}\"")), &["100ms", "10m"], &["0", "99ms", "601s", U64_MAX, "-1"]),
        file("database_proxy[0].idle_timeout", leak(db("idle_timeout = \"{v}\"")), &["0", "30d"], &["30d1s", U64_MAX, "-1"]),
        file("database_proxy[0].drain_timeout", leak(db("drain_timeout = \"{v}\"")), &["0", "1h"], &["1h1s", U64_MAX, "-1"]),
        file("database_proxy[0].socket_mode", "[[database_proxy]]\nsocket = \"{dir}/db.sock\"\nupstream = \"127.0.0.1:9\"\nworkspace_group_id = \"wg\"\nsocket_mode = \"{v}\"", &["0600", "0777"], MODE_REFUSED),
        file("database_proxy[0].allowed_uids", leak(db("allowed_uids = [{v}]")), &["0", "4294967295"], UID_REFUSED),
        // [[api_proxy]]
        file("api_proxy[0].max_connections", leak(api("max_connections = {v}")), &["1", "100000"], COUNT_REFUSED),
        file("api_proxy[0].connect_timeout", leak(api("connect_timeout = \"{v}\"")), &["100ms", "10m"], &["0", "99ms", "601s", U64_MAX, "-1"]),
        file("api_proxy[0].timeout", leak(api("timeout = \"{v}\"")), &["1s", "24h"], &["0", "999ms", "24h1s", U64_MAX, "-1"]),
        // The command line.
        flags("max-connections", proxy("--max-connections"), &["1", "100000"], COUNT_REFUSED),
        flags("connect", proxy("--connect-timeout"), &["100ms", "10m"], &["0", "99ms", "601s", U64_MAX, "-1"]),
        flags("idle", proxy("--idle-timeout"), &["0", "30d"], &["30d1s", U64_MAX, "-1"]),
        flags("drain", proxy("--drain-timeout"), &["0", "1h"], &["1h1s", U64_MAX, "-1"]),
        flags("--timeout", proxy("--timeout"), &["10ms", "1h"], &["0", "9ms", "1h1s", U64_MAX, "-1"]),
        flags("--timeout", &["--jwt-type", "api", "--timeout={v}"], &["10ms", "1h"], &["0", "9ms", "1h1s", U64_MAX, "-1"]),
        flags("--timeout", &["detect", "--timeout={v}"], &["10ms", "1h"], &["0", "9ms", "1h1s", U64_MAX, "-1"]),
        flags("--grace", &["run", "--grace={v}", "--env", "T=api", "--", "true"], &["0", "1h"], &["1h1s", U64_MAX, "-1"]),
        flags("--timeout", &["probe", "--socket", "{dir}/none.sock", "--timeout={v}"], &["10ms", "1h"], &["0", "9ms", "1h1s", U64_MAX, "-1"]),
        flags("--timeout", &["credential-process", "--profile", "p", "--socket", "{dir}/none.sock", "--timeout={v}"], &["10ms", "1h"], &["0", "1h1s", U64_MAX, "-1"]),
        flags("expires", &["s3", "presign", "--profile", "p", "--bucket", "b", "--key", "k", "--socket", "{dir}/none.sock", "--expires={v}"], &["1", "7d"], &["0", "604801", U64_MAX, "-1"]),
        // The reference client's environment knobs: clamped to their ranges
        // (1..=20 retries, 1..=5000 ms, 1..=300 s), unparsable ones ignored, as
        // the reference does; never a panic or a wait of u64::MAX.
        flags("S2IAM_AZURE_MI_RETRIES", AZURE_ENV_RETRIES, &["0", "1", "20", "21", U64_MAX, "-1", "x"], &[]),
        flags("S2IAM_AZURE_MI_BACKOFF_MS", AZURE_ENV_BACKOFF, &["0", "1", "5000", "5001", U64_MAX, "-1"], &[]),
        flags("S2IAM_AZURE_CLI_TIMEOUT", AZURE_ENV_CLI, &["0", "1", "300", "301", U64_MAX, "-1"], &[]),
        flags("--exit-after", &["dev", "--dir", "{dir}/dev", "--tcp", "127.0.0.1:0", "--mysql", "127.0.0.1:0", "--data-api-proxy", "127.0.0.1:0", "--management-api-proxy", "127.0.0.1:0", "--exit-after={v}"], &["1s", "30d"], &["0", "30d1s", U64_MAX, "-1"]),
    ]
}

/// The binary with every endpoint at the mocks.
fn s2iam(server: &TestServer) -> Command {
    let mut cmd = Command::from(common::s2iam_cmd(server));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn fill(text: &str, value: &str, dir: &Path) -> String {
    text.replace("{v}", value)
        .replace("{dir}", &dir.display().to_string())
}

/// Runs to the end: status and stderr; no status if it still ran after 15 s
/// (then it is killed).
async fn finish(mut cmd: Command) -> (Option<ExitStatus>, String) {
    match tokio::time::timeout(Duration::from_secs(15), cmd.output()).await {
        Ok(out) => {
            let out = out.expect("runs");
            (
                Some(out.status),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => (None, "(still running after 15 s)".into()),
    }
}

/// One `GET /healthz` over `socket` with a plain stream, closed at once: true if
/// an HTTP answer came.
async fn answers(socket: &Path) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    let mut head = [0u8; 12];
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .is_ok()
        && s.read_exact(&mut head).await.is_ok()
        && head.starts_with(b"HTTP/1.1 ")
}

/// Starts `cmd`, waits until it serves (`/healthz` answers on `socket`, or it is
/// still running after a second), then SIGTERM: how it ended and its stderr.
async fn start_and_stop(mut cmd: Command, socket: Option<&Path>) -> (Option<ExitStatus>, String) {
    use tokio::io::AsyncReadExt;
    let mut child = cmd.spawn().expect("spawns");
    let mut stderr = child.stderr.take().expect("piped");
    let reader = tokio::spawn(async move {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err).await;
        err
    });
    let started = tokio::time::Instant::now();
    let mut status = None;
    loop {
        if let Some(s) = child.try_wait().expect("waits") {
            status = Some(s);
            break;
        }
        let up = match socket {
            Some(s) => answers(s).await,
            None => started.elapsed() > Duration::from_secs(1),
        };
        if up || started.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if status.is_none() {
        if let Some(pid) = child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .ok()
            .and_then(Result::ok);
    }
    if status.is_none() {
        let _ = child.kill().await;
    }
    let err = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    (status, err)
}

/// What is wrong with how one run ended, if anything.
fn judge(
    label: &str,
    case: &Case,
    accepted: bool,
    started: bool,
    status: Option<ExitStatus>,
    stderr: &str,
) -> Option<String> {
    let code = status.and_then(|s| s.code());
    if code == Some(101) || stderr.contains("panicked") {
        return Some(format!("{label}: PANIC {code:?}: {stderr}"));
    }
    if accepted {
        let usage = code == Some(2)
            || stderr.contains("invalid setting")
            || stderr.contains("invalid value")
            || stderr.contains("is outside")
            || stderr.contains("is not valid");
        // A sidecar stopped by this test's SIGTERM exits 143 (the lifecycle
        // contract, unless --exit-zero-on-sigterm): as clean as 0.
        let clean = code == Some(0) || code == Some(143);
        return (usage || (!started && !clean)).then(|| {
            format!("{label}: refused or not clean although in range: {status:?} {stderr}")
        });
    }
    let field = case.setting.rsplit('.').next().unwrap_or(case.setting);
    let names = [
        field.to_string(),
        field.replace('_', "-"),
        field.replace('-', "_"),
    ]
    .iter()
    .any(|n| stderr.contains(n.as_str()));
    (code == Some(0) || status.is_none() || !names)
        .then(|| format!("{label}: expected a clear error naming {field}, got {code:?}: {stderr}"))
}

/// Failures of one value of one case (empty: it behaved).
async fn one(
    server: Arc<TestServer>,
    case: &Case,
    value: &'static str,
    accepted: bool,
) -> Vec<String> {
    let dir = temp_dir("ranges");
    let socket = dir.join("s.sock");
    let label = |what: &str| format!("{} = {value} ({what})", case.setting);
    let mut failures = Vec::new();
    let mut judge = |what: &str, status: Option<ExitStatus>, stderr: &str, started: bool| {
        failures.extend(judge(&label(what), case, accepted, started, status, stderr));
    };
    match &case.surface {
        Surface::File(toml) => {
            let config = dir.join("config.toml");
            std::fs::write(&config, fill(toml, value, &dir)).unwrap();
            let args = |check: bool| {
                let mut cmd = s2iam(&server);
                cmd.arg("serve");
                if check {
                    cmd.arg("--check");
                }
                cmd.arg("--socket")
                    .arg(&socket)
                    .arg("--config")
                    .arg(&config);
                cmd
            };
            let (status, stderr) = finish(args(true)).await;
            judge("serve --check", status, &stderr, false);
            if accepted {
                let (status, stderr) = start_and_stop(args(false), Some(&socket)).await;
                // Started, served /healthz, then stopped with 0 on SIGTERM.
                judge("serve", status, &stderr, false);
            } else {
                let (status, stderr) = finish(args(false)).await;
                judge("serve", status, &stderr, false);
            }
        }
        Surface::Flags(argv) => {
            let mut cmd = s2iam(&server);
            for arg in argv.iter().map(|a| fill(a, value, &dir)) {
                // `ENV:NAME=VALUE`: an environment variable, not an argument.
                match arg.strip_prefix("ENV:").and_then(|a| a.split_once('=')) {
                    Some((name, v)) => cmd.env(name, v),
                    None => cmd.arg(arg),
                };
            }
            if accepted {
                let (status, stderr) = start_and_stop(cmd, None).await;
                judge("start", status, &stderr, true);
            } else {
                let (status, stderr) = finish(cmd).await;
                judge("start", status, &stderr, false);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_numeric_setting_refuses_its_extremes_without_a_panic() {
    let server = Arc::new(mocks(CloudConfig::gcp()).await);
    let cases: &'static [Case] = Box::leak(cases().into_boxed_slice());
    let slots = Arc::new(tokio::sync::Semaphore::new(6));
    let mut tasks = tokio::task::JoinSet::new();
    let mut runs = 0usize;
    for case in cases {
        for (values, accepted) in [(case.accepted, true), (case.refused, false)] {
            for value in values {
                let (server, slots) = (server.clone(), slots.clone());
                runs += 1;
                tasks.spawn(async move {
                    let _slot = slots.acquire_owned().await.expect("semaphore open");
                    one(server, case, value, accepted).await
                });
            }
        }
    }
    let mut failures = Vec::new();
    while let Some(result) = tasks.join_next().await {
        failures.extend(result.expect("case task"));
    }
    assert!(runs > 200, "{runs} values tried");
    assert!(
        failures.is_empty(),
        "{} of {runs} values misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
