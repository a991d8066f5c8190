//! The database proxy end to end: the sidecar in-process with a
//! `[[database_proxy]]`, the mock cloud (GCP), the mock auth service and the mock
//! SingleStore, and a real MySQL client library (`mysql_async`) on real sockets.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{eventually, provider_config, sub_of, temp_dir, uds_get};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use s2iam::env::Env;
use s2iam_sidecar::config::{ServeConfig, ServeOverrides};
use s2iam_sidecar::serve::Sidecar;
use s2iam_testserver::{AuthConfig, CloudConfig, SingleStoreConfig, TestServer, TestServerConfig};
use sha2::Digest;

const WG: &str = "wg-db";

/// The mocks, the CA file of the mock SingleStore, and a sidecar with one proxy.
struct World {
    server: TestServer,
    dir: PathBuf,
    ca: PathBuf,
    sidecar: Option<Sidecar>,
}

impl World {
    fn proxy_port(&self) -> u16 {
        self.sidecar.as_ref().unwrap().database_proxies()[0]
            .tcp_addr()
            .unwrap()
            .port()
    }

    fn socket(&self) -> PathBuf {
        self.sidecar.as_ref().unwrap().socket_path().unwrap()
    }

    fn db(&self) -> &s2iam_testserver::MockSingleStore {
        self.server.singlestore().unwrap()
    }

    /// The database JWT the sidecar currently serves for the proxy's workspace group.
    async fn current_jwt(&self) -> String {
        let (status, body) = uds_get(
            &self.socket(),
            &format!("/v1/token/database?workspaceGroupID={WG}&format=raw"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn shutdown(mut self) {
        if let Some(s) = self.sidecar.take() {
            s.shutdown().await;
        }
        self.server.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn mocks(auth: AuthConfig) -> TestServer {
    let config = TestServerConfig::new(CloudConfig::gcp())
        .with_auth(auth)
        .with_singlestore(SingleStoreConfig {
            workspace_group_id: Some(WG.into()),
            large_rows: 20_000,
            ..SingleStoreConfig::default()
        });
    TestServer::start(config).await.expect("mocks start")
}

/// Starts a sidecar whose one `[[database_proxy]]` has the defaults below,
/// overridden by `proxy` (TOML values).
async fn world(auth: AuthConfig, proxy: &[(&str, &str)], cache: &str) -> World {
    let server = mocks(auth).await;
    let dir = temp_dir("dbproxy");
    let ca = dir.join("singlestore-ca.pem");
    std::fs::write(&ca, server.singlestore().unwrap().ca_pem()).unwrap();
    let mut table: HashMap<&str, String> = HashMap::from([
        ("listen", "\"127.0.0.1:0\"".to_string()),
        (
            "upstream",
            format!("\"{}\"", server.singlestore().unwrap().addr()),
        ),
        ("server_name", "\"singlestore.mock\"".into()),
        ("ca_file", format!("{:?}", ca.display().to_string())),
        ("workspace_group_id", format!("\"{WG}\"")),
    ]);
    for (k, v) in proxy {
        table.insert(k, v.to_string());
    }
    let mut toml = format!("[cache]\n{cache}\n[[database_proxy]]\n");
    for (k, v) in &table {
        toml.push_str(&format!("{k} = {v}\n"));
    }
    let mut config = ServeConfig::from_toml(
        &toml,
        &Env::from_pairs::<&str, &str>([]),
        &ServeOverrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    config.listen.socket = Some(dir.join("s2iam.sock"));
    config.client.server_url = Some(server.exchange_url_template());
    config.client.allow_http = true;
    config.cache.tick = Duration::from_millis(50);
    let sidecar = Sidecar::start(config, provider_config(&server))
        .await
        .expect("sidecar starts");
    World {
        server,
        dir,
        ca,
        sidecar: Some(sidecar),
    }
}

async fn default_world() -> World {
    world(AuthConfig::default(), &[], "").await
}

/// A client of the proxy: user `*`, no password, no TLS.
fn via_proxy(port: u16) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("*"))
        .prefer_socket(false)
}

async fn current_user(conn: &mut Conn) -> String {
    conn.query_first::<String, _>("SELECT CURRENT_USER()")
        .await
        .unwrap()
        .unwrap()
}

fn sha256(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// The server error a connection attempt ended with: (code, message).
async fn refused(opts: OptsBuilder) -> (u16, String) {
    match Conn::new(opts).await {
        Ok(_) => panic!("the connection was accepted"),
        Err(mysql_async::Error::Server(e)) => (e.code, e.message),
        Err(other) => panic!("not an error packet: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_no_password_runs_as_the_jwts_user() {
    let w = default_world().await;
    let opts = via_proxy(w.proxy_port())
        .db_name(Some("analytics"))
        .connect_attribute("program_name", "dbproxy-test");
    let mut conn = Conn::new(opts).await.expect("connects with no password");
    let jwt = w.current_jwt().await;
    let user = sub_of(&jwt).unwrap();
    assert_eq!(current_user(&mut conn).await, format!("{user}@%"));
    let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    let rows: Vec<(i64, String)> = conn
        .query("SELECT * FROM s2iam_rows LIMIT 1000")
        .await
        .unwrap();
    assert_eq!(rows.len(), 1000);
    assert_eq!(rows[999].0, 999);
    let err = conn.query_drop("DROP TABLE nothing").await.unwrap_err();
    assert!(
        matches!(err, mysql_async::Error::Server(ref e) if e.code == 1064),
        "{err:?}"
    );
    conn.ping().await.expect("the session survives an error");
    conn.disconnect().await.unwrap();

    let login = w.db().logins().pop().unwrap();
    assert_eq!(login.requested_user, "*");
    assert_eq!(
        login.jwt_sha256,
        sha256(&jwt),
        "logged in with the sidecar's token"
    );
    assert_eq!(
        login.database.as_deref(),
        Some("analytics"),
        "database carried"
    );
    assert_eq!(
        login
            .connect_attributes
            .get("program_name")
            .map(String::as_str),
        Some("dbproxy-test"),
        "connection attributes carried: {:?}",
        login.connect_attributes
    );
    assert!(
        login.via_switch,
        "SingleStore's greeting offers no long auth data: the JWT waits for the auth switch"
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_straight_to_the_mock_with_the_jwt_as_password() {
    let w = default_world().await;
    let jwt = w.current_jwt().await;
    let direct = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(w.db().addr().port())
        .user(Some("*"))
        .pass(Some(jwt.clone()))
        .prefer_socket(false)
        .enable_cleartext_plugin(true)
        .ssl_opts(SslOpts::default().with_root_certs(vec![w.ca.clone().into()]));
    let mut conn = Conn::new(direct.clone()).await.expect("direct login");
    assert_eq!(
        current_user(&mut conn).await,
        format!("{}@%", sub_of(&jwt).unwrap())
    );
    conn.disconnect().await.unwrap();
    // Without TLS, or with a wrong JWT, the mock refuses like SingleStore.
    let (code, message) = refused(direct.clone().ssl_opts(None::<SslOpts>)).await;
    assert_eq!(code, 1045);
    assert!(message.contains("require TLS"), "{message}");
    let (code, message) = refused(direct.pass(Some(format!("{jwt}x")))).await;
    assert_eq!(code, 1045);
    assert!(message.contains("not valid"), "{message}");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_new_connections_make_one_exchange() {
    let w = world(AuthConfig::default(), &[("max_connections", "2000")], "").await;
    // Wait for the warm-up exchange, then count.
    assert!(
        eventually(Duration::from_secs(10), async || w
            .sidecar
            .as_ref()
            .unwrap()
            .state
            .readiness()
            .is_ok())
        .await
    );
    let before = w.server.auth_requests().count("/auth/iam/");
    let port = w.proxy_port();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let total = 1000;
    let per_task = total / 50;
    for _ in 0..50 {
        tasks.spawn(async move {
            for _ in 0..per_task {
                let mut conn = Conn::new(via_proxy(port)).await.expect("connects");
                let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
                assert_eq!(one, Some(1));
                conn.disconnect().await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    eprintln!(
        "{total} connections through the proxy in {:?}",
        started.elapsed()
    );
    assert_eq!(
        w.server.auth_requests().count("/auth/iam/"),
        before,
        "no exchange for {total} new connections (the token came from the cache)"
    );
    let logins = w.db().logins();
    assert!(logins.len() >= total);
    assert!(logins.iter().all(|l| l.user.is_some()));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_refresh_new_connections_use_the_new_token_and_open_ones_survive() {
    // 4-second tokens, refreshed at half-life: a refresh about every 2 seconds.
    let auth = AuthConfig {
        token_expiry: Duration::from_secs(4),
        ..AuthConfig::default()
    };
    let w = world(
        auth,
        &[],
        "refresh_at = 0.5\njitter = 0.0\nmin_remaining = \"1s\"",
    )
    .await;
    let mut old = Conn::new(via_proxy(w.proxy_port())).await.unwrap();
    let first = w.db().logins().pop().unwrap().jwt_sha256;
    let exchanges = w.server.auth_requests().count("/auth/iam/");
    assert!(
        eventually(Duration::from_secs(10), async || w
            .server
            .auth_requests()
            .count("/auth/iam/")
            > exchanges)
        .await,
        "the sidecar refreshed the token"
    );
    // The exchange is counted when it arrives; the new token is cached when its
    // answer does.
    let mut jwt = w.current_jwt().await;
    let asked = std::time::Instant::now();
    while sha256(&jwt) == first && asked.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        jwt = w.current_jwt().await;
    }
    assert_ne!(sha256(&jwt), first);
    let mut new = Conn::new(via_proxy(w.proxy_port())).await.unwrap();
    let second = w.db().logins().pop().unwrap().jwt_sha256;
    assert_eq!(
        second,
        sha256(&jwt),
        "the new connection logged in with the new token"
    );
    current_user(&mut new).await;
    // The old session outlives even the expiry of the token it logged in with.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let one: Option<i64> = old.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the open connection survived the refresh");
    old.disconnect().await.unwrap();
    new.disconnect().await.unwrap();
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_reaches_the_client_with_the_servers_message() {
    // The proxy logs in for another workspace group than the server's.
    let w = world(
        AuthConfig::default(),
        &[("workspace_group_id", "\"wg-other\"")],
        "",
    )
    .await;
    let (code, message) = refused(via_proxy(w.proxy_port())).await;
    assert_eq!(code, 1045);
    assert!(
        message.contains("Access denied") && message.contains("wg-other"),
        "{message}"
    );
    let metrics = uds_get(&w.socket(), "/metrics").await.1;
    assert!(
        metrics.contains("reason=\"refused\"} 1"),
        "{}",
        metrics_lines(&metrics)
    );
    w.shutdown().await;
}

fn metrics_lines(m: &str) -> String {
    m.lines()
        .filter(|l| l.starts_with("s2iam_dbproxy"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_an_error_packet_within_the_connect_timeout() {
    // A port nobody listens on: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let w = world(
        AuthConfig::default(),
        &[
            ("upstream", &format!("\"{closed_addr}\"")),
            ("connect_timeout", "\"800ms\""),
        ],
        "",
    )
    .await;
    let (code, message) = refused(via_proxy(w.proxy_port())).await;
    assert_eq!(code, 2003);
    assert!(
        message.contains("cannot connect to SingleStore"),
        "{message}"
    );
    w.shutdown().await;

    // A server that accepts but never greets: the connect timeout ends it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let w = world(
        AuthConfig::default(),
        &[
            ("upstream", &format!("\"{silent_addr}\"")),
            ("connect_timeout", "\"800ms\""),
        ],
        "",
    )
    .await;
    let started = Instant::now();
    let (code, message) = refused(via_proxy(w.proxy_port())).await;
    let took = started.elapsed();
    assert_eq!(code, 2003);
    assert!(message.contains("connect_timeout"), "{message}");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "{took:?}"
    );
    held.abort();
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_is_an_error_packet_saying_why() {
    let auth = AuthConfig {
        fail_verification: true,
        ..AuthConfig::default()
    };
    let w = world(auth, &[], "").await;
    let (code, message) = refused(via_proxy(w.proxy_port())).await;
    assert_eq!(code, 1045);
    assert!(
        message.contains(&format!("no database token for workspace group {WG}"))
            && message.contains("401"),
        "{message}"
    );
    assert!(w.db().logins().is_empty(), "nothing reached SingleStore");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_the_one_too_many_with_an_error_packet() {
    let w = world(AuthConfig::default(), &[("max_connections", "2")], "").await;
    let port = w.proxy_port();
    let a = Conn::new(via_proxy(port)).await.unwrap();
    let b = Conn::new(via_proxy(port)).await.unwrap();
    let (code, message) = refused(via_proxy(port)).await;
    assert_eq!(code, 1040);
    assert!(message.contains("max_connections = 2"), "{message}");
    a.disconnect().await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || Conn::new(via_proxy(port))
            .await
            .is_ok())
        .await,
        "a slot frees up when a client leaves"
    );
    b.disconnect().await.unwrap();
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_refused() {
    let w = world(
        AuthConfig::default(),
        &[("server_name", "\"db.elsewhere.example\"")],
        "",
    )
    .await;
    let (code, message) = refused(via_proxy(w.proxy_port())).await;
    assert_eq!(code, 2026);
    assert!(
        message.contains("TLS to SingleStore (db.elsewhere.example) failed")
            && message.contains("certificate"),
        "{message}"
    );
    assert!(w.db().logins().is_empty(), "no JWT was sent");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let w = default_world().await;
    // The system store does not know the mock's CA.
    let other = mocks(AuthConfig::default()).await;
    let other_ca = w.dir.join("other-ca.pem");
    std::fs::write(&other_ca, other.singlestore().unwrap().ca_pem()).unwrap();
    let w2 = world(
        AuthConfig::default(),
        &[("ca_file", &format!("{:?}", other_ca.display().to_string()))],
        "",
    )
    .await;
    let (code, message) = refused(via_proxy(w2.proxy_port())).await;
    assert_eq!(code, 2026, "{message}");
    other.shutdown().await;
    w2.shutdown().await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_of_client_users_and_socket_peers() {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    let w = world(AuthConfig::default(), &[("allowed_users", "[\"app\"]")], "").await;
    let (code, message) = refused(via_proxy(w.proxy_port())).await;
    assert_eq!(code, 1045);
    assert!(
        message.contains("user '*' is not in allowed_users"),
        "{message}"
    );
    let mut conn = Conn::new(via_proxy(w.proxy_port()).user(Some("app")))
        .await
        .expect("an allowed user");
    let jwt = w.current_jwt().await;
    assert_eq!(
        current_user(&mut conn).await,
        format!("{}@%", sub_of(&jwt).unwrap()),
        "the upstream user is still the JWT's"
    );
    conn.disconnect().await.unwrap();
    w.shutdown().await;

    for (allowed, ok) in [(uid, true), (uid + 1, false)] {
        let dir = temp_dir("dbproxy-sock");
        let socket = dir.join("mysql.sock");
        let w = world(
            AuthConfig::default(),
            &[
                ("socket", &format!("{:?}", socket.display().to_string())),
                ("listen", "\"127.0.0.1:0\""),
                ("allowed_uids", &format!("[{allowed}]")),
            ],
            "",
        )
        .await;
        let opts = OptsBuilder::default()
            .socket(Some(socket.display().to_string()))
            .user(Some("*"));
        if ok {
            let mut conn = Conn::new(opts).await.expect("over the Unix socket");
            current_user(&mut conn).await;
            conn.disconnect().await.unwrap();
        } else {
            let (code, message) = refused(opts).await;
            assert_eq!(code, 1045);
            assert!(
                message.contains(&format!("uid {uid} is not in allowed_uids")),
                "{message}"
            );
        }
        w.shutdown().await;
        assert!(!socket.exists(), "the socket file is removed at shutdown");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed_after_the_idle_timeout() {
    let w = world(AuthConfig::default(), &[("idle_timeout", "\"300ms\"")], "").await;
    let mut conn = Conn::new(via_proxy(w.proxy_port())).await.unwrap();
    current_user(&mut conn).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        conn.query_drop("SELECT 1").await.is_err(),
        "closed while idle"
    );
    w.shutdown().await;
}

/// `max_session_lifetime`: a busy session outlives it (never quiet between
/// commands), a quiet one past it is closed, and the client's next
/// connection logs in again; the metric counts the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_past_max_session_lifetime_close_at_a_quiet_moment() {
    let w = world(
        AuthConfig::default(),
        &[("max_session_lifetime", "\"1s\"")],
        "",
    )
    .await;
    let mut conn = Conn::new(via_proxy(w.proxy_port())).await.unwrap();
    let logins = w.db().logins().len();
    let busy = std::time::Instant::now();
    while busy.elapsed() < Duration::from_millis(2500) {
        let rows: Vec<(i64, String)> = conn
            .query("SELECT * FROM s2iam_rows LIMIT 2000")
            .await
            .expect("a busy session is not closed for its age");
        assert_eq!(rows.len(), 2000);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = uds_get(&w.socket(), "/metrics").await.1;
    let closed = "s2iam_dbproxy_sessions_closed_total{proxy=\"127.0.0.1:0\",reason=\"max_session_lifetime\"}";
    assert!(m.contains(&format!("{closed} 0")), "{}", metrics_lines(&m));
    // Quiet past the lifetime: closed within QUIET and a poll.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(
        conn.query_drop("SELECT 1").await.is_err(),
        "a quiet session past max_session_lifetime is closed"
    );
    let mut again = Conn::new(via_proxy(w.proxy_port())).await.unwrap();
    current_user(&mut again).await;
    assert_eq!(
        w.db().logins().len(),
        logins + 1,
        "the next connection logged in"
    );
    let m = uds_get(&w.socket(), "/metrics").await.1;
    assert!(m.contains(&format!("{closed} 1")), "{}", metrics_lines(&m));
    again.disconnect().await.unwrap();
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_session_lifetime_has_a_range() {
    for (value, ok) in [
        ("\"0\"", true),
        ("\"1s\"", true),
        ("\"500ms\"", false),
        ("\"31d\"", false),
    ] {
        let toml = format!(
            "[[database_proxy]]\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:3306\"\nworkspace_group_id = \"{WG}\"\nmax_session_lifetime = {value}\n"
        );
        let got = ServeConfig::from_toml(
            &toml,
            &Env::from_pairs::<&str, &str>([]),
            &ServeOverrides::default(),
        );
        match (got, ok) {
            (Ok(_), true) => {}
            (Err(e), false) => assert!(
                e.to_string().contains("max_session_lifetime") && e.to_string().contains("30days"),
                "{e}"
            ),
            (got, _) => panic!("{value}: {:?}", got.map(|_| ())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_bytes_and_connect_latency() {
    let w = default_world().await;
    let mut conn = Conn::new(via_proxy(w.proxy_port())).await.unwrap();
    let _: Vec<(i64, String)> = conn
        .query("SELECT * FROM s2iam_rows LIMIT 100")
        .await
        .unwrap();
    let m = uds_get(&w.socket(), "/metrics").await.1;
    let proxy = "127.0.0.1:0";
    for line in [
        format!("s2iam_dbproxy_connections_open{{proxy=\"{proxy}\"}} 1"),
        format!("s2iam_dbproxy_connections_total{{proxy=\"{proxy}\"}} 1"),
        format!("s2iam_dbproxy_connect_seconds_count{{proxy=\"{proxy}\"}} 1"),
        format!("s2iam_dbproxy_login_failures_total{{proxy=\"{proxy}\",reason=\"refused\"}} 0"),
    ] {
        assert!(m.contains(&line), "missing {line}:\n{}", metrics_lines(&m));
    }
    let to_client: u64 = m
        .lines()
        .find(|l| l.starts_with("s2iam_dbproxy_bytes_total") && l.contains("to_client"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        to_client > 100 * 100,
        "the 100 rows of 100 bytes were counted: {to_client}"
    );
    conn.disconnect().await.unwrap();
    w.shutdown().await;
}

/// The proxy's CA file path for a test that runs the binary.
fn write_ca(server: &TestServer, dir: &Path) -> PathBuf {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, server.singlestore().unwrap().ca_pem()).unwrap();
    ca
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_and_drains_open_sessions() {
    use std::process::{Command, Stdio};
    let server = mocks(AuthConfig::default()).await;
    let dir = temp_dir("dbproxy-sigterm");
    let ca = write_ca(&server, &dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("s2iam.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nsocket = {sock:?}\n[[database_proxy]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"{up}\"\nserver_name = \"singlestore.mock\"\nca_file = {ca:?}\nworkspace_group_id = \"{WG}\"\ndrain_timeout = \"3s\"\n",
            sock = dir.join("s2iam.sock").display().to_string(),
            up = server.singlestore().unwrap().addr(),
            ca = ca.display().to_string(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s2iam"));
    cmd.env_clear();
    for (k, v) in s2iam::env::endpoints::mock_env(&server.cloud_url()) {
        cmd.env(k, v);
    }
    let mut child = cmd
        .env("S2IAM_JWT_SERVER_URL", server.exchange_url_template())
        .env("S2IAM_ALLOW_HTTP", "1")
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), async || Conn::new(via_proxy(port))
            .await
            .is_ok())
        .await,
        "the proxy of s2iam serve accepts"
    );
    let mut open = Conn::new(via_proxy(port)).await.unwrap();
    let kill = |sig: &str| {
        Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .unwrap()
    };
    assert!(kill("TERM").success());
    let stopped_accepting = eventually(Duration::from_secs(5), async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    })
    .await;
    assert!(stopped_accepting, "no new connections after SIGTERM");
    let one: Option<i64> = open.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the open session goes on while draining");
    assert!(child.try_wait().unwrap().is_none(), "still draining");
    open.disconnect().await.unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        status.code(),
        Some(143),
        "SIGTERM: 143 (no --exit-zero-on-sigterm)"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "exited as soon as the last session ended, not at the drain deadline"
    );

    // A session that never ends is cut at drain_timeout.
    let mut child2 = cmd.spawn().unwrap();
    assert!(
        eventually(Duration::from_secs(20), async || Conn::new(via_proxy(port))
            .await
            .is_ok())
        .await
    );
    let mut stuck = Conn::new(via_proxy(port)).await.unwrap();
    let signalled = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child2.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(s) = child2.try_wait().unwrap() {
            break s;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(15),
            "did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(143));
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(10),
        "cut at the 3s drain deadline: {took:?}"
    );
    assert!(stuck.query_drop("SELECT 1").await.is_err());
    let _ = child.kill();
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_prints_a_client_command_that_connects_without_a_token() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = temp_dir("dbproxy-dev");
    let mut child = Command::new(env!("CARGO_BIN_EXE_s2iam"))
        .env_clear()
        .args([
            "dev",
            "--exit-after",
            "60s",
            "--tcp",
            "127.0.0.1:0",
            "--mysql",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let command = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the banner names a mariadb command");
        if line.trim_start().starts_with("mariadb ") {
            break line.trim().to_string();
        }
    };
    assert!(
        command.ends_with("-u '*' -e 'SELECT CURRENT_USER()'"),
        "{command}"
    );
    let port: u16 = command
        .split_whitespace()
        .skip_while(|w| *w != "-P")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("a port after -P");
    let mut conn = None;
    for _ in 0..100 {
        match Conn::new(via_proxy(port)).await {
            Ok(c) => {
                conn = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut conn = conn.expect("the dev proxy accepts once the token is warm");
    let user = current_user(&mut conn).await;
    assert!(user.ends_with("@%") && user.len() > 2, "{user}");
    conn.disconnect().await.unwrap();
    // The printed command itself, when Debian's client is installed (CI installs it).
    let has_mariadb = Command::new("mariadb").arg("--version").output().is_ok();
    if has_mariadb {
        let out = Command::new("sh").args(["-c", &command]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(&user));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 18, item 9: a pool's `COM_CHANGE_USER` carries its own credential; the
/// proxy answers it with its own login (the current JWT, the proxy's user) and
/// never forwards what the client sent. `COM_RESET_CONNECTION` is relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_logs_in_again_with_the_jwt_and_never_forwards_the_clients_password() {
    let w = default_world().await;
    let secret = "the-clients-own-password";
    let opts = via_proxy(w.proxy_port())
        .pass(Some(secret))
        .enable_cleartext_plugin(true);
    let mut conn = Conn::new(opts).await.expect("connects");
    let jwt = w.current_jwt().await;
    let user = format!("{}@%", sub_of(&jwt).unwrap());
    assert!(conn.reset().await.expect("COM_RESET_CONNECTION relayed"));
    assert_eq!(current_user(&mut conn).await, user);
    let change = conn.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("someone-else".into()))
            .with_pass(Some(secret.into()))
            .with_db_name(Some("analytics".into())),
    );
    tokio::time::timeout(Duration::from_secs(30), change)
        .await
        .expect("COM_CHANGE_USER answered within 30 s")
        .expect("COM_CHANGE_USER answered");
    assert_eq!(
        current_user(&mut conn).await,
        user,
        "still the proxy's identity"
    );
    let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    conn.disconnect().await.unwrap();

    let logins = w.db().logins();
    let change = logins
        .iter()
        .find(|l| l.change_user)
        .expect("the mock saw a COM_CHANGE_USER");
    assert_eq!(
        change.requested_user, "*",
        "the proxy's user, not the client's"
    );
    assert_eq!(change.jwt_sha256, sha256(&jwt), "the current JWT");
    assert_eq!(change.database.as_deref(), Some("analytics"));
    assert!(
        logins.iter().all(|l| l.jwt_sha256 != sha256(secret)),
        "the client's password reached the server"
    );
    w.shutdown().await;
}

/// A `COM_CHANGE_USER` to a user outside `allowed_users` is refused with a
/// clear error, and the session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_to_a_user_not_allowed_is_refused() {
    let w = world(AuthConfig::default(), &[("allowed_users", "[\"*\"]")], "").await;
    let mut conn = Conn::new(via_proxy(w.proxy_port()))
        .await
        .expect("connects");
    let change =
        conn.change_user(mysql_async::ChangeUserOpts::default().with_user(Some("intruder".into())));
    let err = tokio::time::timeout(Duration::from_secs(30), change)
        .await
        .expect("answered within 30 s")
        .unwrap_err();
    assert!(
        matches!(err, mysql_async::Error::Server(ref e) if e.code == 1045 && e.message.contains("COM_CHANGE_USER refused") && e.message.contains("allowed_users")),
        "{err:?}"
    );
    assert!(w.db().logins().iter().all(|l| !l.change_user));
    w.shutdown().await;
}

/// Issue 19: the greeting carries the proxy's own connection id for the
/// session (the server's is not known yet when the proxy greets), and a `KILL`
/// of it from another connection reaches the server with the server's id for
/// that session; a `KILL` of the server's id (`SELECT CONNECTION_ID()`) is
/// passed as it is; any other id, including one whose session has ended,
/// reaches the server as 0 (the mock records each `KILL`'s id and answers OK
/// for a session that logged in, else its own `1094 Unknown thread id`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_by_the_greetings_connection_id_reaches_the_servers_session() {
    let w = default_world().await;
    let mut a = Conn::new(via_proxy(w.proxy_port()))
        .await
        .expect("connects");
    let mut b = Conn::new(via_proxy(w.proxy_port()))
        .await
        .expect("connects");
    let (a_proxy, b_proxy) = (a.id(), b.id());
    assert!(a_proxy >= 1_000_000_000, "{a_proxy}");
    assert!(b_proxy >= 1_000_000_000, "{b_proxy}");
    assert_ne!(a_proxy, b_proxy);
    let a_server: u32 = a
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(a_server, a_proxy, "SELECT CONNECTION_ID() is the server's");

    b.query_drop(format!("KILL QUERY {a_proxy}"))
        .await
        .expect("KILL QUERY of the greeting's id");
    b.query_drop(format!("/* cancel */ kill\n connection {a_proxy} ;"))
        .await
        .expect("KILL CONNECTION, with a comment and odd spacing");
    b.query_drop(format!("KILL QUERY {a_server}"))
        .await
        .expect("the server's own id is passed as it is");
    for outside in ["KILL QUERY 12345".to_string(), "KILL USER app".into()] {
        match b.query_drop(outside.as_str()).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 1094, "{e:?}");
                assert!(e.message.contains("Unknown thread id: 0"), "{e:?}");
            }
            other => panic!("{outside}: {other:?}"),
        }
    }
    // Once a session has ended, its id names nothing (the proxy forgets it
    // when the session's task ends, just after the client's COM_QUIT).
    let c = Conn::new(via_proxy(w.proxy_port()))
        .await
        .expect("connects");
    let c_proxy = c.id();
    c.disconnect().await.unwrap();
    assert!(
        common::eventually(Duration::from_secs(10), async || {
            b.query_drop(format!("KILL QUERY {c_proxy}")).await.is_err()
        })
        .await,
        "an ended session's id is still taken"
    );

    let kills = w.db().kills();
    assert_eq!(
        kills[..5],
        [a_server, a_server, a_server, 0, 0],
        "{kills:?}"
    );
    assert_eq!(kills.last(), Some(&0), "{kills:?}");
    // The client's session went on (the mock records KILL, it carries out none).
    let one: Option<i64> = a.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    a.disconnect().await.unwrap();
    b.disconnect().await.unwrap();
    w.shutdown().await;
}
