//! `s2iam proxy`: the database proxy on its own.

use crate::common::mocks;
use crate::{run, s2iam, text};
use s2iam_testserver::CloudConfig;

/// Issue 23 (6): `s2iam proxy` on a port in use fails before it asks for any
/// token, with the hint the sidecar gives, and its log carries no ANSI escapes
/// when stderr is not a terminal.
#[tokio::test]
async fn proxy_on_a_port_in_use_fails_with_the_hint_before_any_token() {
    let server = mocks(CloudConfig::gcp()).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut cmd = s2iam(&server);
    cmd.args([
        "proxy",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--upstream",
        "127.0.0.1:9",
        "--workspace-group-id",
        "wg-busy",
        "--allow-http",
        "--server-url",
        &server.exchange_url_template(),
    ]);
    let out = run(cmd).await;
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("choose another port with --listen"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escapes in a non-terminal log: {err:?}"
    );
    assert!(
        server.auth().records().is_empty(),
        "a token was asked for before the bind failed"
    );
    drop(taken);
    server.shutdown().await;
}
