//! The database proxy against a real MariaDB server (JWT login through PAM), with
//! `mysql_async`: protocol features a proxy can break, each through the proxy
//! and, where it says something, straight to the server with the JWT.
//!
//! Every test here is `#[ignore]`d: they need the server, the mocks and the
//! proxy that `scripts/check-real-database` starts, and it runs them with
//! `--ignored` and these variables set:
//! `S2IAM_REALDB_PROXY_PORT` (the proxy), `S2IAM_REALDB_WRONG_PROXY_PORT` (a proxy
//! whose JWT is for another workspace group), `S2IAM_REALDB_LIFETIME_PROXY_PORT` (a
//! proxy with `max_session_lifetime = "2s"`), `S2IAM_REALDB_PORT` (MariaDB),
//! `S2IAM_REALDB_CA`, `S2IAM_REALDB_USER`, `S2IAM_REALDB_TOKEN_FILE` (the current
//! JWT, kept fresh by the sidecar), `S2IAM_REALDB_TMP` (a scratch directory),
//! `S2IAM_REALDB_POOL_SECONDS` (how long the pool and long-session tests run).

// The test world is handed over in the environment (there is no crate::env::Env here).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use mysql_async::prelude::{Query, Queryable, WithParams};
use mysql_async::{
    ChangeUserOpts, Compression, Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts, SslOpts,
    WhiteListFsHandler,
};

fn var(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run scripts/check-real-database"))
}

fn port(name: &str) -> u16 {
    var(name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a port"))
}

fn user() -> String {
    var("S2IAM_REALDB_USER")
}

/// The JWT the sidecar keeps in its token file (read at each connect: tokens
/// live 30 seconds here).
fn jwt() -> String {
    std::fs::read_to_string(var("S2IAM_REALDB_TOKEN_FILE"))
        .expect("token file")
        .trim()
        .to_string()
}

/// Through the proxy: no password, no TLS.
fn proxy() -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port("S2IAM_REALDB_PROXY_PORT"))
        .user(Some(user()))
        .db_name(Some("app"))
        .prefer_socket(false)
}

/// Straight to MariaDB: the JWT as a clear-text password over verified TLS.
fn direct() -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port("S2IAM_REALDB_PORT"))
        .user(Some(user()))
        .pass(Some(jwt()))
        .db_name(Some("app"))
        .prefer_socket(false)
        .enable_cleartext_plugin(true)
        .ssl_opts(SslOpts::default().with_root_certs(vec![
            std::path::PathBuf::from(var("S2IAM_REALDB_CA")).into(),
        ]))
}

async fn current_user(conn: &mut Conn) -> String {
    conn.query_first::<String, _>("SELECT CURRENT_USER()")
        .await
        .unwrap()
        .unwrap()
}

fn expected_user() -> String {
    format!("{}@%", user())
}

#[tokio::test]
#[ignore = "needs scripts/check-real-database"]
async fn mysql_async_logs_in_through_the_proxy_and_directly() {
    for (how, opts) in [("proxy", proxy()), ("direct", direct())] {
        let mut conn = Conn::new(opts)
            .await
            .unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(current_user(&mut conn).await, expected_user(), "{how}");
        let rows: Vec<(i64, String)> = conn.query("SELECT id, payload FROM big").await.unwrap();
        assert_eq!(rows.len(), 20_000, "{how}");
        conn.disconnect().await.unwrap();
    }
}

#[tokio::test]
#[ignore = "needs scripts/check-real-database"]
async fn prepared_statements_use_the_binary_protocol() {
    let mut conn = Conn::new(proxy()).await.unwrap();
    let stmt = conn
        .prep("SELECT ? + 1, CONCAT(?, 'x'), ?, CAST(? AS DOUBLE), id FROM big WHERE id = ?")
        .await
        .unwrap();
    for i in 1..=50i64 {
        let row: Option<(i64, String, Option<i64>, f64, i64)> = conn
            .exec_first(&stmt, (i, format!("v{i}"), None::<i64>, 0.5f64, i))
            .await
            .unwrap();
        assert_eq!(row, Some((i + 1, format!("v{i}x"), None, 0.5, i)));
    }
    conn.close(stmt).await.unwrap();
    conn.disconnect().await.unwrap();
}

#[tokio::test]
#[ignore = "needs scripts/check-real-database"]
async fn multi_statements_return_every_result_set() {
    let mut conn = Conn::new(proxy()).await.unwrap();
    let mut result = conn
        .query_iter("SELECT 1; SELECT 2, 3; DO 0; SELECT id FROM big WHERE id <= 5")
        .await
        .unwrap();
    let first: Vec<i64> = result.collect().await.unwrap();
    let second: Vec<(i64, i64)> = result.collect().await.unwrap();
    let _: Vec<i64> = result.collect().await.unwrap();
    let fourth: Vec<i64> = result.collect().await.unwrap();
    drop(result);
    assert_eq!(first, vec![1]);
    assert_eq!(second, vec![(2, 3)]);
    assert_eq!(fourth, vec![1, 2, 3, 4, 5]);
    conn.ping().await.unwrap();
    conn.disconnect().await.unwrap();
}

#[tokio::test]
#[ignore = "needs scripts/check-real-database"]
async fn load_data_local_infile() {
    let path = std::path::Path::new(&var("S2IAM_REALDB_TMP")).join("infile.csv");
    let rows = 50_000usize;
    let text: String = (0..rows).map(|i| format!("{i},row {i}\n")).collect();
    std::fs::write(&path, &text).unwrap();
    let opts = proxy().local_infile_handler(Some(WhiteListFsHandler::new(vec![path.clone()])));
    let mut conn = Conn::new(opts).await.unwrap();
    conn.query_drop("CREATE TEMPORARY TABLE loaded (id INT, name VARCHAR(40))")
        .await
        .unwrap();
    conn.query_drop(format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE loaded FIELDS TERMINATED BY ','",
        path.display()
    ))
    .await
    .unwrap();
    let (count, last): (i64, String) = conn
        .query_first("SELECT COUNT(*), MAX(name) FROM loaded")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count as usize, rows);
    assert_eq!(last, "row 9999");
    conn.disconnect().await.unwrap();
}

#[tokio::test]
#[ignore = "needs scripts/check-real-database"]
async fn packets_of_16_mib_and_more_both_ways() {
    for compressed in [false, true] {
        let opts = if compressed {
            proxy().compression(Compression::fast())
        } else {
            proxy()
        };
        let mut conn = Conn::new(opts).await.unwrap();
        let size = 20 * 1024 * 1024 + 7;
        let blob: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let back: Option<(i64, Vec<u8>)> = conn
            .exec_first("SELECT LENGTH(?), ?", (blob.clone(), blob.clone()))
            .await
            .unwrap();
        let (len, echoed) = back.unwrap();
        assert_eq!(len as usize, size, "compressed {compressed}");
        assert!(
            echoed == blob,
            "compressed {compressed}: the blob came back changed"
        );
        let text: Option<i64> = conn
            .query_first(format!("SELECT LENGTH('{}')", "y".repeat(17 * 1024 * 1024)))
            .await
            .unwrap();
        assert_eq!(text, Some(17 * 1024 * 1024));
        conn.disconnect().await.unwrap();
    }
}

#[tokio::test]
#[ignore = "needs scripts/check-real-database"]
async fn the_compressed_protocol() {
    let mut conn = Conn::new(proxy().compression(Compression::default()))
        .await
        .unwrap();
    let on: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Compression'")
        .await
        .unwrap();
    assert_eq!(on.map(|r| r.1), Some("ON".into()), "compression negotiated");
    let rows: Vec<(i64, String)> = conn.query("SELECT id, payload FROM big").await.unwrap();
    assert_eq!(rows.len(), 20_000);
    let n: Option<i64> = conn.exec_first("SELECT ? * 2", (21,)).await.unwrap();
    assert_eq!(n, Some(42));
    // COM_CHANGE_USER inside compressed frames: answered by the proxy too.
    conn.change_user(ChangeUserOpts::default().with_pass(Some("not-forwarded".into())))
        .await
        .unwrap();
    assert_eq!(current_user(&mut conn).await, expected_user());
    assert!(conn.reset().await.unwrap());
    conn.disconnect().await.unwrap();
}

#[tokio::test]
#[ignore = "needs scripts/check-real-database"]
async fn reset_connection_and_change_user_keep_the_proxys_identity() {
    let mut conn = Conn::new(proxy()).await.unwrap();
    conn.query_drop("SET @marker = 7").await.unwrap();
    conn.query_drop("CREATE TEMPORARY TABLE scratch (x INT)")
        .await
        .unwrap();
    assert!(conn.reset().await.unwrap(), "COM_RESET_CONNECTION relayed");
    let marker: Option<Option<i64>> = conn.query_first("SELECT @marker").await.unwrap();
    assert_eq!(marker, Some(None), "the session was reset");
    conn.query_drop("SET @marker = 8").await.unwrap();
    conn.change_user(
        ChangeUserOpts::default()
            .with_user(Some(user()))
            .with_pass(Some("a-password-that-must-not-reach-the-server".into()))
            .with_db_name(Some("app".into())),
    )
    .await
    .unwrap();
    assert_eq!(current_user(&mut conn).await, expected_user());
    let marker: Option<Option<i64>> = conn.query_first("SELECT @marker").await.unwrap();
    assert_eq!(marker, Some(None), "COM_CHANGE_USER resets the session");
    let db: Option<String> = conn.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db.as_deref(), Some("app"));
    conn.disconnect().await.unwrap();
}

/// Runs `SELECT SLEEP(60)` on `sleeper`, sends `kill` from a second connection
/// (`killer`'s options) after half a second, and checks that the sleep ends
/// early as interrupted and the session goes on.
async fn killed_from_a_second_connection(sleeper: Conn, killer: OptsBuilder, kill: String) -> Conn {
    let started = Instant::now();
    let sleep = tokio::spawn(async move {
        let mut sleeper = sleeper;
        let r: Result<Option<i64>, _> = sleeper.query_first("SELECT SLEEP(60)").await;
        (r, sleeper)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut killer = Conn::new(killer).await.unwrap();
    killer.query_drop(kill.as_str()).await.unwrap();
    let (result, mut sleeper) = tokio::time::timeout(Duration::from_secs(20), sleep)
        .await
        .expect("the query ended")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "{kill}");
    match result {
        Ok(v) => assert_eq!(v, Some(1), "SLEEP interrupted returns 1"),
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1317, "{e:?}"),
        Err(e) => panic!("{e:?}"),
    }
    sleeper
        .ping()
        .await
        .expect("the killed query's session goes on");
    killer.disconnect().await.unwrap();
    sleeper
}

/// `KILL QUERY` with the server's id for the session, as `SELECT
/// CONNECTION_ID()` gives it: passed on as it is.
#[tokio::test]
#[ignore = "needs scripts/check-real-database"]
async fn kill_query_from_a_second_connection() {
    let mut sleeper = Conn::new(proxy()).await.unwrap();
    let id: u32 = sleeper
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        id,
        sleeper.id(),
        "SQL gives the server's id, the greeting the proxy's"
    );
    let sleeper =
        killed_from_a_second_connection(sleeper, proxy(), format!("KILL QUERY {id}")).await;
    sleeper.disconnect().await.unwrap();
}

/// `KILL QUERY` with the id from the handshake (`Conn::id()`, what drivers
/// cancel by): the proxy's own id for the session, sent to the server as the
/// server's; from a plain and from a compressed connection.
#[tokio::test]
#[ignore = "needs scripts/check-real-database"]
async fn kill_query_with_the_handshakes_connection_id() {
    let sleeper = Conn::new(proxy()).await.unwrap();
    let id = sleeper.id();
    assert!(id >= 1_000_000_000, "the proxy's id: {id}");
    let sleeper =
        killed_from_a_second_connection(sleeper, proxy(), format!("KILL QUERY {id}")).await;
    let compressed = proxy().compression(Compression::fast());
    let mut sleeper =
        killed_from_a_second_connection(sleeper, compressed, format!("kill /* c */ query {id};"))
            .await;
    // An id that is no session of this proxy reaches the server as 0.
    match sleeper.query_drop("KILL QUERY 999999999").await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 1094, "{e:?}");
            assert!(e.message.contains("Unknown thread id: 0"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    sleeper.disconnect().await.unwrap();
}

#[tokio::test]
#[ignore = "needs scripts/check-real-database"]
async fn a_refused_login_carries_the_servers_own_message() {
    let wrong = OptsBuilder::from_opts(proxy()).tcp_port(port("S2IAM_REALDB_WRONG_PROXY_PORT"));
    for (how, opts) in [
        ("proxy with another workspace group's JWT", wrong),
        (
            "direct with a bad JWT",
            direct().pass(Some(format!("{}x", jwt()))),
        ),
    ] {
        match Conn::new(opts).await {
            Ok(_) => panic!("{how}: logged in"),
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 1045, "{how}: {e:?}");
                assert!(
                    e.message
                        .starts_with(&format!("Access denied for user '{}'", user())),
                    "{how}: not MariaDB's own message: {}",
                    e.message
                );
            }
            Err(e) => panic!("{how}: {e:?}"),
        }
    }
}

/// A session that outlives its JWT (30 seconds here) inside one long
/// transaction, through the proxy and directly: the server checks the token at
/// login only, as SingleStore does, so it goes on.
#[tokio::test]
#[ignore = "needs scripts/check-real-database"]
async fn a_long_transaction_outlives_its_jwt() {
    let seconds: u64 = var("S2IAM_REALDB_POOL_SECONDS").parse().unwrap();
    let mut through = Conn::new(proxy()).await.unwrap();
    let mut straight = Conn::new(direct()).await.unwrap();
    let table = format!("long_{}", std::process::id());
    through
        .query_drop(format!("CREATE TABLE {table} (n INT)"))
        .await
        .unwrap();
    let mut tx = through.start_transaction(Default::default()).await.unwrap();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        "INSERT INTO {table} VALUES (?)"
            .replace("{table}", &table)
            .with((n,))
            .ignore(&mut tx)
            .await
            .unwrap();
        let _: Option<i64> = straight.query_first("SELECT 1").await.unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tx.commit().await.unwrap();
    let count: Option<i64> = straight
        .query_first(format!("SELECT COUNT(*) FROM {table}"))
        .await
        .unwrap();
    assert_eq!(count, Some(n));
    through
        .query_drop(format!("DROP TABLE {table}"))
        .await
        .unwrap();
    assert!(seconds < 35 || started.elapsed() > Duration::from_secs(35));
}

/// `max_session_lifetime` (2 s on this proxy) against a real server: a query
/// silent for longer than that, a result with a pause between its rows and an
/// open transaction are all kept; a session quiet between commands past it is
/// closed, and its server-side session ends with it; the next connection is a
/// new server session.
#[tokio::test]
#[ignore = "needs scripts/check-real-database"]
async fn max_session_lifetime_closes_only_between_commands_outside_a_transaction() {
    let opts = proxy().tcp_port(port("S2IAM_REALDB_LIFETIME_PROXY_PORT"));
    let mut conn = Conn::new(opts.clone()).await.unwrap();
    let first: u64 = conn
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    let slept: Option<i64> = conn.query_first("SELECT SLEEP(3)").await.unwrap();
    assert_eq!(
        slept,
        Some(0),
        "a query silent past the lifetime is answered"
    );
    let rows: Vec<(i64, i64)> = conn
        .query("SELECT a, SLEEP(IF(a = 2, 1.5, 0)) FROM (SELECT 1 a UNION ALL SELECT 2 UNION ALL SELECT 3) t")
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "a result with a pause in it arrives whole");
    conn.query_drop("BEGIN").await.unwrap();
    let _: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let same: Option<u64> = conn
        .query_first("SELECT CONNECTION_ID()")
        .await
        .expect("an open transaction is never closed for age");
    assert_eq!(same, Some(first));
    conn.query_drop("COMMIT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        conn.query_drop("SELECT 1").await.is_err(),
        "quiet between commands past the lifetime: closed"
    );
    let mut again = Conn::new(opts).await.unwrap();
    let second: Option<u64> = again.query_first("SELECT CONNECTION_ID()").await.unwrap();
    assert_ne!(second, Some(first), "a new server session");
    let mut gone = false;
    for _ in 0..50 {
        let left: Option<i64> = again
            .query_first(format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {first}"
            ))
            .await
            .unwrap();
        if left == Some(0) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the closed session's server side ended");
    again.disconnect().await.unwrap();
}

/// A `mysql_async` pool through the proxy while tokens expire every 30
/// seconds: new physical connections take the current JWT, old ones go on,
/// connections are reset on return (COM_RESET_CONNECTION); no query fails.
#[tokio::test]
#[ignore = "needs scripts/check-real-database"]
async fn a_pool_on_short_lived_tokens_loses_no_query() {
    let seconds: u64 = var("S2IAM_REALDB_POOL_SECONDS").parse().unwrap();
    let constraints = PoolConstraints::new(2, 8).unwrap();
    let opts = proxy().pool_opts(
        PoolOpts::default()
            .with_constraints(constraints)
            .with_inactive_connection_ttl(Duration::from_secs(5))
            .with_ttl_check_interval(Duration::from_secs(1))
            .with_abs_conn_ttl(Some(Duration::from_secs(20))),
    );
    let pool = Pool::new(opts);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..4i64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            while started.elapsed() < Duration::from_secs(seconds) {
                let r = async {
                    let mut conn = pool.get_conn().await?;
                    let v: Option<i64> = conn.exec_first("SELECT ? + 0", (worker,)).await?;
                    Ok::<_, mysql_async::Error>(v)
                }
                .await;
                match r {
                    Ok(Some(v)) if v == worker => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, Vec::new());
    for t in tasks {
        let (o, f) = t.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    pool.disconnect().await.unwrap();
    println!("mysql_async pool: {ok} queries, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 0);
}

fn p50(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn bench_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `scripts/bench-real-database` (release build): connection setup (connect,
/// login, `SELECT 1`, quit), `SELECT 1` on an open connection and the large
/// `stream` table, through the proxy and straight to the server with the JWT,
/// the two sides alternating; one JSON line of medians. Not a timed test: it
/// asserts nothing about the figures.
#[tokio::test]
#[ignore = "needs scripts/bench-real-database"]
async fn bench_mysql_async() {
    let (n_setup, n_rtt, n_stream) = (
        bench_count("S2IAM_BENCH_SETUP", 40),
        bench_count("S2IAM_BENCH_RTT", 2000),
        bench_count("S2IAM_BENCH_STREAM", 5),
    );
    let [sp, sd] = bench_setup(n_setup, proxy).await;
    // Round trip and streaming: through the proxy, direct, and direct through the bench's
    // plain TCP forwarder (`S2IAM_REALDB_HOP_PORT`: one more process on the path, no
    // protocol work in it) when it runs one.
    let mut sides = vec![("proxy", proxy()), ("direct", direct())];
    if std::env::var("S2IAM_REALDB_HOP_PORT").is_ok() {
        sides.push(("hop", direct().tcp_port(port("S2IAM_REALDB_HOP_PORT"))));
    }
    let mut conns = Vec::new();
    for (_, opts) in &sides {
        conns.push(Conn::new(opts.clone()).await.unwrap());
    }
    let order = |i: usize| -> Vec<usize> {
        let mut ks: Vec<usize> = (0..sides.len()).collect();
        if i % 2 == 1 {
            ks.reverse();
        }
        ks
    };
    let mut rtt = vec![Vec::new(); sides.len()];
    let mut stream = vec![Vec::new(); sides.len()];
    for i in 0..n_rtt.saturating_add(100) {
        for k in order(i) {
            let t = Instant::now();
            let _: Option<i64> = conns[k].query_first("SELECT 1").await.unwrap();
            if i >= 100 {
                rtt[k].push(t.elapsed().as_secs_f64());
            }
        }
    }
    for i in 0..n_stream {
        for k in order(i) {
            let t = Instant::now();
            let rows: Vec<(i64, Vec<u8>)> = conns[k]
                .query("SELECT id, payload FROM stream")
                .await
                .unwrap();
            assert!(!rows.is_empty());
            stream[k].push(t.elapsed().as_secs_f64());
        }
    }
    for c in conns {
        c.disconnect().await.unwrap();
    }
    let medians = |samples: Vec<Vec<f64>>, scale: f64| -> serde_json::Value {
        let by_side = sides
            .iter()
            .zip(samples)
            .map(|((side, _), v)| (side.to_string(), serde_json::json!(p50(v) * scale)));
        serde_json::Value::Object(by_side.collect())
    };
    let line = serde_json::json!({
        "driver": "mysql_async (Rust)",
        "settings": "prefer_socket(false), no TLS options",
        "setup_ms": {"proxy": sp * 1e3, "direct": sd * 1e3},
        "rtt_us": medians(rtt, 1e6),
        "stream_s": medians(stream, 1.0),
    });
    println!("BENCH {line}");
    // The defaults through the proxy: `prefer_socket` (true) makes mysql_async read
    // `@@socket` after a TCP login to 127.0.0.1 and try to reconnect through that Unix
    // socket, the server's, past the proxy (here the server is on this machine, so it
    // tries, and the server refuses it: no JWT); then it falls back to the proxy.
    let [sp, sd] = bench_setup(n_setup.div_ceil(2), || proxy().prefer_socket(true)).await;
    println!(
        "BENCH {{\"driver\": \"mysql_async (Rust)\", \"settings\": \"defaults (prefer_socket = true)\", \"setup_ms\": {{\"proxy\": {:.3}, \"direct\": {:.3}}}}}",
        sp * 1e3,
        sd * 1e3,
    );
}

/// Connection setup (connect, login, `SELECT 1`, quit), `n` times each through
/// the proxy (with `through`'s options) and directly, alternating: the medians.
async fn bench_setup(n: usize, through: impl Fn() -> OptsBuilder) -> [f64; 2] {
    let mut setup: [Vec<f64>; 2] = Default::default();
    for i in 0..n {
        for k in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            let opts = if k == 0 { through() } else { direct() };
            let t = Instant::now();
            let mut c = Conn::new(opts).await.unwrap();
            let _: Option<i64> = c.query_first("SELECT 1").await.unwrap();
            c.disconnect().await.unwrap();
            setup[k].push(t.elapsed().as_secs_f64());
        }
    }
    setup.map(p50)
}
