//! `s2iam dev`: the whole system on one machine, like `vault server -dev`. It
//! starts the mock cloud, the mock auth service, a mock SingleStore and the mock
//! Data and Management APIs in-process on loopback, then the sidecar pointed at
//! them — every endpoint overridden, so it never touches a real metadata address —
//! with a database proxy in front of the mock SingleStore (see [`crate::dbproxy`])
//! and an API proxy in front of each API, and prints the commands that fetch a
//! token, connect a MySQL client with no password, and call the APIs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use s2iam_testserver::{ApiConfig, CloudConfig, MockApiServer, TestServer, TestServerConfig};

use super::{ServeError, Sidecar};
use crate::config::api_proxy::{ApiProxyConfig, ProxyToken};
use crate::config::{LogFormat, ServeConfig, Sink, WarmToken};
use s2iam::env::endpoints::mock_env;
use s2iam::env::ProviderConfig;
use s2iam::env::{Env, Fs};
use s2iam::exchange::JwtType;

/// What `s2iam dev` runs.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// `aws`, `gcp` or `azure`.
    pub cloud: String,
    /// Where the sockets, token files and config go.
    pub dir: PathBuf,
    /// The sidecar's loopback TCP address.
    pub tcp: SocketAddr,
    /// The workspace group of the warm database token.
    pub workspace_group_id: String,
    /// Where the database proxy listens (port 0: any free port).
    pub mysql: SocketAddr,
    /// Loopback address of the API proxy to the mock Data API.
    pub data_api_proxy: SocketAddr,
    /// Loopback address of the API proxy to the mock Management API.
    pub management_api_proxy: SocketAddr,
    /// Remove `dir` on exit (it was made for this run); otherwise only the token
    /// file is removed. Either way no valid JWT is left behind.
    pub remove_dir_on_exit: bool,
}

/// Name of the API proxy `s2iam dev` runs in front of the mock Data API.
pub const DATA_API_PROXY: &str = "data-api";
/// Name of the API proxy `s2iam dev` runs in front of the mock Management API.
pub const MANAGEMENT_API_PROXY: &str = "management-api";

/// Why `s2iam dev` could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("unknown --cloud {0:?}: use aws, gcp or azure")]
    /// `--cloud` is not aws, gcp or azure.
    UnknownCloud(String),
    #[error("cannot create {path}: {source}")]
    /// The working directory cannot be created.
    Dir {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    #[error("cannot start the mock cloud and auth service: {0}")]
    /// The mocks did not start.
    TestServer(#[from] s2iam_testserver::StartError),
    #[error(transparent)]
    /// The sidecar did not start.
    Serve(#[from] ServeError),
    #[error("--mysql: {0}")]
    /// `--mysql` is not a valid listen address.
    Mysql(String),
    #[error("cannot write the mock SingleStore's CA file {path}: {source}")]
    /// The mock SingleStore's CA could not be written.
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    #[error("the demo's built-in configuration is invalid: {0}")]
    /// The demo's configuration did not load (a bug: its environment is fixed).
    Config(#[from] crate::config::ConfigError),
}

/// The running demo.
pub struct Dev {
    /// The mock cloud and auth service.
    pub mocks: TestServer,
    /// The mock Data API and Management API.
    pub api: MockApiServer,
    /// The sidecar pointed at them.
    pub sidecar: Sidecar,
    /// What was asked for.
    pub options: DevOptions,
}

impl Dev {
    /// Starts the mocks, then the sidecar pointed at them. When any of it fails
    /// (a port in use, typically), what was made for this run is removed before
    /// the error is returned: the directory if it was new, else the socket, the
    /// CA file and the token file in it.
    pub async fn start(options: DevOptions) -> Result<Self, DevError> {
        let cloud = match options.cloud.as_str() {
            "aws" | "gcp" | "azure" => {
                CloudConfig::named(&options.cloud).unwrap_or_else(CloudConfig::none)
            }
            other => return Err(DevError::UnknownCloud(other.to_string())),
        };
        std::fs::create_dir_all(&options.dir).map_err(|source| DevError::Dir {
            path: options.dir.clone(),
            source,
        })?;
        let started = Self::start_in(cloud, options.clone()).await;
        if started.is_err() {
            remove_leftovers(&options);
        }
        started
    }

    async fn start_in(cloud: CloudConfig, options: DevOptions) -> Result<Self, DevError> {
        let singlestore = s2iam_testserver::SingleStoreConfig {
            workspace_group_id: Some(options.workspace_group_id.clone()),
            ..Default::default()
        };
        let mocks =
            TestServer::start(TestServerConfig::new(cloud).with_singlestore(singlestore)).await?;
        let ca = options.dir.join(CA_FILE);
        if let Some(db) = mocks.singlestore() {
            std::fs::write(&ca, db.ca_pem()).map_err(|source| DevError::CaFile {
                path: ca.clone(),
                source,
            })?;
        }
        let api_config = ApiConfig {
            workspace_group_id: options.workspace_group_id.clone(),
            ..ApiConfig::default()
        };
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let api = MockApiServer::start(api_config, mocks.auth().key().clone(), loopback).await?;
        // A fixed environment: nothing from the real one can point s2iam elsewhere.
        let env = Env::from_pairs(mock_env(&mocks.cloud_url()));
        let provider_config = ProviderConfig::with_env(env.clone(), Fs::real());
        let mut config = serve_config(&options, &mocks, &api, &env)?;
        config.database_proxies = dev_proxy(&options, &mocks, &ca)?.into_iter().collect();
        let sidecar = Sidecar::start(config, provider_config).await?;
        Ok(Self {
            mocks,
            api,
            sidecar,
            options,
        })
    }

    /// The text printed at start: where things are and how to use them.
    pub fn banner(&self) -> String {
        let socket = self
            .sidecar
            .socket_path()
            .unwrap_or_default()
            .display()
            .to_string();
        let tcp = self
            .sidecar
            .tcp_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let wg = &self.options.workspace_group_id;
        let db = self.mocks.singlestore().map(|d| d.addr());
        let aws_demo = if self.options.cloud == "aws" {
            format!("\x20 curl -sS --unix-socket {socket} http://localhost/v1/aws/credentials/{DEMO_AWS_PROFILE}\n")
        } else {
            String::new()
        };
        let exports: String = self
            .cli_env()
            .iter()
            .map(|(k, v)| format!("\x20 export {k}={v}\n"))
            .collect();
        let proxy = |name| {
            self.sidecar
                .api_proxy_addr(name)
                .map(|a| a.to_string())
                .unwrap_or_default()
        };
        format!(
            "s2iam dev: a mock {cloud} cloud and a mock auth service on loopback, and the sidecar in front of them.\n\
             \n\
             mock cloud:    {cloud_url}\n\
             mock auth:     {auth_url}\n\
             mock APIs:     {api_url}  (Data API /api/v2, Management API /v1)\n\
             socket:        {socket}\n\
             http:          http://{tcp}\n\
             token file:    {sink}\n\
             Data API proxy:        http://{data}  (adds the database JWT for {wg})\n\
             Management API proxy:  http://{mgmt}  (adds the API JWT)\n\
             \n\
             Fetch a token:\n\
             \x20 curl -sS --unix-socket {socket} 'http://localhost/v1/token/database?workspaceGroupID={wg}'\n\
             \x20 curl -sS -w '\\n' 'http://{tcp}/v1/token/api?format=raw'\n\
             \x20 curl -sS --unix-socket {socket} http://localhost/v1/identity\n\
             \x20 curl -sS --unix-socket {socket} http://localhost/metrics\n\
             {aws_demo}\
             \n\
             Use the s2iam CLI against the same mocks (paste into another shell; no s2iam on your PATH? cargo install --path . --locked):\n\
             {exports}\
             \x20 s2iam --workspace-group-id {wg}\n\
             \x20 s2iam identity\n\
             \x20 s2iam doctor --exchange   # why it works here, and one real exchange (the token is never printed)\n\
             \n\
             Connect to the mock SingleStore without a token (the database proxy logs in with it):\n\
             \x20 mariadb -h 127.0.0.1 -P {mysql_port} -u '*' -e 'SELECT CURRENT_USER()'\n\
             Or straight to the mock, the JWT as password over verified TLS:\n\
             \x20 MYSQL_PWD=\"$(curl -sS --unix-socket {socket} 'http://localhost/v1/token/database?workspaceGroupID={wg}&format=raw')\" mariadb -h {db_host} -P {db_port} -u '*' --ssl --ssl-ca={ca} --ssl-verify-server-cert -e 'SELECT CURRENT_USER()'\n\
             Call the SingleStore APIs with no token (the proxy adds it):\n\
             \x20 curl -sS -w '\\n' http://{data}/api/v2/query/rows -H 'Content-Type: application/json' -d '{{\"sql\": \"SELECT CURRENT_USER()\"}}'\n\
             \x20 curl -sS -w '\\n' http://{mgmt}/v1/workspaceGroups\n\
             \n\
             Make the auth service refuse every identity (the sidecar keeps serving its valid token; s2iam doctor --exchange shows the 401):\n\
             \x20 curl -sS -w '\\n' -X PUT {auth_url}/_mock/behaviour -d '{{\"fail_verification\": true}}'\n\
             and undo it:\n\
             \x20 curl -sS -w '\\n' -X PUT {auth_url}/_mock/behaviour -d '{{\"fail_verification\": false}}'\n\
             \n\
             Ctrl-C stops everything.",
            cloud = self.options.cloud,
            cloud_url = self.mocks.cloud_url(),
            auth_url = self.mocks.auth_url(),
            api_url = self.api.url(),
            data = proxy(DATA_API_PROXY),
            mgmt = proxy(MANAGEMENT_API_PROXY),
            sink = self.options.dir.join(TOKEN_FILE).display(),
            mysql_port = self.mysql_addr().map(|a| a.port()).unwrap_or_default(),
            db_host = db.map(|d| d.ip().to_string()).unwrap_or_default(),
            db_port = db.map(|d| d.port()).unwrap_or_default(),
            ca = self.options.dir.join(CA_FILE).display(),
        )
    }

    /// Where the database proxy listens.
    pub fn mysql_addr(&self) -> Option<SocketAddr> {
        self.sidecar
            .database_proxies()
            .first()
            .and_then(|p| p.tcp_addr())
    }

    /// The environment that points the CLI at this run's mocks.
    pub fn cli_env(&self) -> Vec<(String, String)> {
        let mut env = mock_env(&self.mocks.cloud_url());
        env.push((
            "S2IAM_JWT_SERVER_URL".into(),
            self.mocks.exchange_url_template(),
        ));
        env.push(("S2IAM_ALLOW_HTTP".into(), "1".into()));
        env
    }

    /// Stops everything and removes the token file (and the directory, if it was
    /// made for this run): a valid JWT must not outlive the demo.
    pub async fn shutdown(self) {
        self.sidecar.shutdown().await;
        self.api.shutdown().await;
        self.mocks.shutdown().await;
        remove_leftovers(&self.options);
    }
}

/// Removes what a run made: the whole directory when it was made for the run,
/// else the files the run wrote in it (a stopped sidecar removes its socket
/// itself; one that failed to start may not have).
fn remove_leftovers(options: &DevOptions) {
    if options.remove_dir_on_exit {
        let _ = std::fs::remove_dir_all(&options.dir);
        return;
    }
    for file in [TOKEN_FILE, CA_FILE, SOCKET_FILE, AWS_TOKEN_FILE] {
        let _ = std::fs::remove_file(options.dir.join(file));
    }
}

/// The mock SingleStore's CA certificate, for clients connecting straight to it.
const CA_FILE: &str = "singlestore-ca.pem";

/// The AWS container-credentials token `s2iam dev --cloud aws` writes.
const AWS_TOKEN_FILE: &str = "aws-token";

/// The sidecar's socket in the run's directory.
const SOCKET_FILE: &str = "s2iam.sock";

/// The token file the demo keeps warm.
const TOKEN_FILE: &str = "database-token";

/// The AWS credentials profile `s2iam dev --cloud aws` serves (the mock
/// instance's own role).
const DEMO_AWS_PROFILE: &str = "demo";

fn serve_config(
    options: &DevOptions,
    mocks: &TestServer,
    api: &MockApiServer,
    env: &Env,
) -> Result<ServeConfig, DevError> {
    let mut config = ServeConfig::load(env, &crate::config::ServeOverrides::default())?;
    config.listen.socket = Some(options.dir.join(SOCKET_FILE));
    config.listen.tcp = Some(options.tcp);
    config.client.server_url = Some(mocks.exchange_url_template());
    config.client.allow_http = true;
    config.log.format = LogFormat::Text;
    config.client.startup_timeout = Duration::from_secs(30);
    config.tokens = vec![
        WarmToken {
            jwt_type: JwtType::Database,
            workspace_group_id: Some(options.workspace_group_id.clone()),
            assume_role: None,
            gcp_audience: config.client.gcp_audience.clone(),
            sink: Some(Sink {
                path: options.dir.join(TOKEN_FILE),
                mode: 0o600,
                owner: None,
                group: None,
                on_change: None,
            }),
        },
        WarmToken {
            jwt_type: JwtType::Api,
            workspace_group_id: None,
            assume_role: None,
            gcp_audience: config.client.gcp_audience.clone(),
            sink: None,
        },
    ];
    config.api_proxies = vec![
        ApiProxyConfig::new(
            DATA_API_PROXY,
            options.data_api_proxy,
            &api.url(),
            ProxyToken::Database {
                workspace_group_id: options.workspace_group_id.clone(),
            },
        ),
        ApiProxyConfig::new(
            MANAGEMENT_API_PROXY,
            options.management_api_proxy,
            &api.url(),
            ProxyToken::Api,
        ),
    ];
    if options.cloud == "aws" {
        // With a token file the credential routes also answer on loopback TCP
        // (and the sidecar has nothing to warn about in its own demo config).
        config.aws.authorization_token_file = Some(options.dir.join(AWS_TOKEN_FILE));
        config.aws.profiles = vec![s2iam::aws_vending::AwsProfile {
            name: DEMO_AWS_PROFILE.into(),
            source: s2iam::aws_vending::ProfileSource::Workload,
            rules: Vec::new(),
            warm: false,
        }];
    }
    Ok(config)
}

/// The database proxy in front of the mock SingleStore.
fn dev_proxy(
    options: &DevOptions,
    mocks: &TestServer,
    ca: &std::path::Path,
) -> Result<Option<crate::dbproxy::DatabaseProxyConfig>, DevError> {
    let Some(db) = mocks.singlestore() else {
        return Ok(None);
    };
    let file = crate::dbproxy::config::FileDatabaseProxy {
        listen: Some(options.mysql.to_string()),
        upstream: Some(db.addr().to_string()),
        server_name: Some(db.server_name().to_string()),
        ca_file: Some(ca.to_path_buf()),
        workspace_group_id: Some(options.workspace_group_id.clone()),
        ..Default::default()
    };
    crate::dbproxy::config::build(0, file)
        .map(Some)
        .map_err(|e| DevError::Mysql(e.message))
}
