//! The mock Data API and Management API: which JWTs they accept, what they answer,
//! and what they record.

mod common;

use std::net::SocketAddr;

use common::{client, send, start};
use s2iam_testserver::api::fingerprint;
use s2iam_testserver::{ApiConfig, CloudConfig, KeySet, MockApiServer, TestServer};
use serde_json::{json, Value};

async fn api(server: &TestServer) -> MockApiServer {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    MockApiServer::start(ApiConfig::default(), server.auth().key().clone(), addr)
        .await
        .unwrap()
}

fn claims(jwt_type: &str, wg: Option<&str>, exp_in: i64) -> Value {
    let now = s2iam_testserver::util::now_unix() as i64;
    let mut c = json!({"sub": "svc@proj.iam.gserviceaccount.com", "jwtType": jwt_type,
        "iat": now, "exp": now + exp_in});
    if let Some(wg) = wg {
        c["workspaceGroupID"] = json!(wg);
    }
    c
}

fn sign(server: &TestServer, claims: &Value) -> String {
    server.auth().key().sign(claims).unwrap()
}

async fn sql(url: &str, auth: Option<&str>, sql: &str) -> common::Reply {
    let mut req = client()
        .post(format!("{url}/api/v2/query/rows"))
        .json(&json!({ "sql": sql }));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    send(req).await
}

#[tokio::test]
async fn the_data_api_answers_a_valid_database_jwt_as_singlestore_does() {
    let server = start(CloudConfig::none()).await;
    let api = api(&server).await;
    let url = api.url();
    let jwt = sign(&server, &claims("database", Some("wg-1"), 600));
    let bearer = format!("Bearer {jwt}");

    let r = sql(&url, Some(&bearer), "SELECT 1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"results": [{"rows": [{"1": 1}]}]}));
    let r = sql(&url, Some(&bearer), "select current_user();").await;
    assert_eq!(
        r.json(),
        json!({"results": [{"rows": [{"CURRENT_USER()": "svc@proj.iam.gserviceaccount.com@%"}]}]})
    );
    let r = sql(&url, Some(&bearer), "SELECT * FROM large LIMIT 3").await;
    let rows = r.json()["results"][0]["rows"].clone();
    assert_eq!(rows.as_array().unwrap().len(), 3);
    assert_eq!(rows[2]["id"], 2);
    let r = sql(&url, Some(&bearer), "DELETE FROM t").await;
    assert_eq!(r.status, 400);
    assert!(r.body.starts_with("Error 1149: "), "{}", r.body);
    let r = send(
        client()
            .post(format!("{url}/api/v2/exec"))
            .header("authorization", &bearer)
            .json(&json!({"sql": "CREATE TABLE t (a INT)"})),
    )
    .await;
    assert_eq!(r.json(), json!({"lastInsertId": 0, "rowsAffected": 0}));

    let records = api.api().records();
    assert_eq!(records.len(), 5);
    assert!(records
        .iter()
        .all(|r| r.bearer_sha256.as_deref() == Some(fingerprint(&jwt).as_str())));
    assert_eq!(records[3].status, 400);
    let listed = send(client().get(format!("{url}/_mock/api/requests"))).await;
    assert!(
        !listed.body.contains(&jwt),
        "the token itself is never listed"
    );
    api.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn every_other_credential_is_refused_with_a_json_401() {
    let server = start(CloudConfig::none()).await;
    let api = api(&server).await;
    let url = api.url();
    let foreign = KeySet::shared()
        .unwrap()
        .google
        .sign(&claims("database", Some("wg-1"), 600))
        .unwrap();
    let cases = [
        (None, "send Authorization"),
        (Some("Basic dXNlcjpwdw==".to_string()), "Bearer"),
        (Some("Bearer not-a-jwt".to_string()), "not valid"),
        (Some(format!("Bearer {foreign}")), "not valid"),
        (
            Some(format!(
                "Bearer {}",
                sign(&server, &claims("database", Some("wg-1"), -120))
            )),
            "not valid",
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(&server, &claims("database", Some("wg-2"), 600))
            )),
            "workspace group",
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(&server, &claims("api", None, 600))
            )),
            "database JWT",
        ),
    ];
    for (auth, needle) in cases {
        let r = sql(&url, auth.as_deref(), "SELECT 1").await;
        assert_eq!(r.status, 401, "{auth:?}: {}", r.body);
        let body = r.json();
        assert_eq!(body["error"], "unauthorized");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{auth:?}: {body}"
        );
    }
    let good = format!(
        "Bearer {}",
        sign(&server, &claims("database", Some("wg-1"), 600))
    );
    let two = send(
        client()
            .post(format!("{url}/api/v2/query/rows"))
            .header("authorization", &good)
            .header("authorization", &good)
            .json(&json!({"sql": "SELECT 1"})),
    )
    .await;
    assert_eq!(two.status, 401, "two Authorization headers are refused");

    // The Management API takes the API JWT only.
    let groups = |auth: String| {
        send(
            client()
                .get(format!("{url}/v1/workspaceGroups"))
                .header("authorization", auth),
        )
    };
    let r = groups(good.clone()).await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("API JWT"), "{}", r.body);
    let r = groups(format!(
        "Bearer {}",
        sign(&server, &claims("api", None, 600))
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()[0]["workspaceGroupID"], "wg-1");
    // Ping needs nothing, as in the real Data API.
    let r = send(client().get(format!("{url}/api/v2/ping"))).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "pong"));
    api.shutdown().await;
    server.shutdown().await;
}
