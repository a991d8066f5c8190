//! The audit trail (`[audit] path`), over the sidecar's real Unix socket: one
//! JSON line per token handed out, by the hot path and by the router alike,
//! naming the caller's uid, the kind and a fingerprint — and never the token.

use std::time::Duration;

use crate::common::{mocks, sidecar_config, start_sidecar, temp_dir, uds_get, wait_ready};
use s2iam_testserver::CloudConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_per_token_handed_out_and_never_the_token() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("audit");
    let log = dir.join("audit.jsonl");
    let toml = format!(
        "[audit]\npath = {:?}\n[[token]]\ntype = \"api\"\n",
        log.display().to_string()
    );
    let sidecar = start_sidecar(&server, sidecar_config(&server, &dir, &toml)).await;
    let socket = sidecar.socket_path().unwrap();
    wait_ready(&socket).await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        // Warm: answered by the hot path.
        let (status, body) = uds_get(&socket, "/v1/token/api?format=raw").await;
        assert_eq!(status, 200, "{body}");
        tokens.push(body.trim().to_string());
    }
    // Not cached: answered by the router after an exchange.
    let (status, body) = uds_get(
        &socket,
        "/v1/token/database?workspaceGroupID=wg-1&format=raw",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    tokens.push(body.trim().to_string());
    // Refused: no line.
    let (status, _) = uds_get(&socket, "/v1/token/database").await;
    assert_eq!(status, 400);
    sidecar.shutdown().await;

    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    let uid = nix::unistd::getuid().as_raw();
    for (line, kind) in lines.iter().zip(["api", "api", "api", "database"]) {
        assert_eq!(line["event"], "credential_issued");
        assert_eq!(line["surface"], "unix");
        assert_eq!(line["peer"], format!("uid:{uid}"));
        assert_eq!(line["kind"], kind);
        let f = line["fingerprint"].as_str().unwrap();
        assert!(
            f.len() == 16 && f.chars().all(|c| c.is_ascii_hexdigit()),
            "{f}"
        );
        assert!(line["expires_at"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(
        lines[0]["fingerprint"], lines[2]["fingerprint"],
        "the same token"
    );
    assert_ne!(lines[0]["fingerprint"], lines[3]["fingerprint"]);
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap();
        assert!(signature.len() > 16);
        assert!(
            !text.contains(token.as_str()) && !text.contains(signature),
            "the token leaked"
        );
        let payload = token.split('.').nth(1).unwrap();
        assert!(!text.contains(payload), "a token's claims leaked");
    }
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    server.shutdown().await;
}
