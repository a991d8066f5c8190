//! The `s2iam` binary, one module per command, as a newcomer looks for it: the
//! real binary against the mock cloud and auth service (and, where a command
//! needs one, a sidecar), everything on loopback. One test binary, so one link.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/common/tls_front.rs"]
mod tls_front;

mod deadlines;
mod detect;
mod dev;
mod doctor;
mod identity;
mod lifecycle;
mod logs;
mod numeric_ranges;
mod probe;
mod proxy;
mod run;
mod serve;
mod templates;
mod token;
mod usage;

use std::process::{Command, Output};

pub use common::{run, text};
use s2iam_testserver::{CloudConfig, TestServer};

/// The binary with a clean environment pointing every cloud endpoint at `server`.
pub fn s2iam(server: &TestServer) -> Command {
    common::s2iam_clouds(server)
}

/// The binary with a clean environment; with `server`, every endpoint (the auth
/// service too, over plain HTTP) at its mocks.
pub fn s2iam_with_auth(server: Option<&TestServer>) -> Command {
    let Some(server) = server else {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_s2iam"));
        cmd.env_clear();
        return cmd;
    };
    let mut cmd = common::s2iam_clouds(server);
    cmd.env("S2IAM_JWT_SERVER_URL", server.exchange_url_template())
        .env("S2IAM_ALLOW_HTTP", "1");
    cmd
}

/// A finished command's stdout.
pub fn stdout(o: &Output) -> String {
    text(&o.stdout)
}

/// A finished command's stderr.
pub fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// `--server-url` and `--allow-http` for the mock auth service of `server`.
pub fn with_server(cmd: &mut Command, server: &TestServer) {
    cmd.args([
        "--server-url",
        &server.exchange_url_template(),
        "--allow-http",
    ]);
}

/// The three clouds the mocks play, each with the name the CLI gives it.
pub fn clouds() -> [(CloudConfig, &'static str); 3] {
    [
        (CloudConfig::aws(), "aws"),
        (CloudConfig::gcp(), "gcp"),
        (CloudConfig::azure(), "azure"),
    ]
}

/// `s2iam ARGS` against `server`, which must succeed: its stdout.
pub async fn stdout_of(server: &TestServer, args: &[&str]) -> String {
    let mut cmd = s2iam(server);
    cmd.args(args);
    let out = run(cmd).await;
    assert!(out.status.success(), "s2iam {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Runs `cmd`, which must succeed (its stderr in the failure).
pub async fn run_ok(cmd: Command) -> Output {
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
    out
}
