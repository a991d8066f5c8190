//! `s2iam-testserver`: the cloud and the auth service in a box.
//!
//! One process plays every party s2iam talks to: the AWS, GCP and Azure metadata
//! services with the global services behind them (AWS STS, Google IAM Credentials,
//! Azure AD), the SingleStore auth service, and SingleStore's Data API and
//! Management API ([`api`]), and an OpenTelemetry OTLP/HTTP trace receiver
//! ([`otlp`]). Each mock checks what the real one
//! checks (headers, signatures, audiences, expiry) and can be made to misbehave
//! (see [`faults`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), s2iam_testserver::StartError> {
//! use s2iam_testserver::{CloudConfig, TestServer, TestServerConfig};
//! let server = TestServer::start(TestServerConfig::new(CloudConfig::gcp())).await?;
//! println!("metadata at {}, auth at {}", server.cloud_url(), server.auth_url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod api;
pub mod auth;
pub mod cloud;
pub mod faults;
pub mod info;
pub mod keys;
pub mod otlp;
pub mod server;
pub mod singlestore;
pub mod util;

use std::net::SocketAddr;

pub use api::{ApiConfig, ApiRecord, MockApi, MockApiServer};
pub use auth::{AuthConfig, ExchangeRecord, MockAuth, VerifiedIdentity};
pub use cloud::azure::ArcChallenge;
pub use cloud::{
    AwsCredential, AwsIdentity, AzureIdentity, CloudConfig, GcpIdentity, GoogleServices,
    ManagedIdentity, MockCloud, ServiceAccount, WorkloadIdentityPool,
};
pub use faults::{FaultAction, FaultRule, Faults};
pub use keys::KeySet;
pub use otlp::{MockOtlp, MockOtlpServer, ReceivedSpan};
pub use server::{RequestLog, SeenRequest};
pub use singlestore::{LoginRecord, MockSingleStore, SingleStoreConfig};

/// Why a test server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    /// A listener could not be bound.
    Bind {
        /// The bound address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    #[error(transparent)]
    /// Keys could not be generated.
    Keys(#[from] keys::KeyError),
    #[error("cannot build the HTTP client the auth service uses to reach STS: {0}")]
    /// The HTTP client could not be built.
    Http(reqwest::Error),
    #[error("cannot make the mock cloud's TLS certificate: {0}")]
    /// The HTTPS listener's certificate could not be made.
    Tls(#[from] singlestore::tls::TlsError),
    #[error("cannot start the mock SingleStore: {0}")]
    /// The mock SingleStore could not start.
    SingleStore(#[from] singlestore::SingleStoreError),
}

/// Everything needed to start a [`TestServer`].
#[derive(Debug, Clone)]
pub struct TestServerConfig {
    /// The mock cloud's identities and behaviour.
    pub cloud: CloudConfig,
    /// The mock auth service's behaviour.
    pub auth: AuthConfig,
    /// Addresses the mock cloud listens on (all serve the same cloud). Port 0 picks a
    /// free port. Inside an isolated network namespace this is
    /// `169.254.169.254:80` (plus `169.254.170.2:80` for ECS).
    pub cloud_addrs: Vec<SocketAddr>,
    /// Where the auth service listens (port 0: a free port).
    pub auth_addr: SocketAddr,
    /// RSA key size for fresh keys; `None` shares one 2048-bit key set per process.
    pub key_size: Option<usize>,
    /// Also run a mock SingleStore database endpoint that accepts the mock auth
    /// service's database JWTs.
    pub singlestore: Option<SingleStoreConfig>,
    /// Also serve the mock cloud over HTTPS on a loopback port, with a certificate
    /// (from a fresh CA, [`TestServer::cloud_ca_pem`]) for these host names, e.g.
    /// the AWS endpoints derived for a partition; clients resolve the names to
    /// [`TestServer::cloud_tls_addr`].
    pub cloud_tls_names: Vec<String>,
}

impl TestServerConfig {
    /// Both mocks on random loopback ports.
    pub fn new(cloud: CloudConfig) -> Self {
        Self {
            cloud,
            auth: AuthConfig::default(),
            cloud_addrs: vec![loopback_any_port()],
            auth_addr: loopback_any_port(),
            key_size: None,
            singlestore: None,
            cloud_tls_names: Vec::new(),
        }
    }

    /// The same config with the mock cloud also on HTTPS for `names`.
    pub fn with_cloud_tls(mut self, names: &[&str]) -> Self {
        self.cloud_tls_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// The same config with a mock SingleStore.
    pub fn with_singlestore(mut self, singlestore: SingleStoreConfig) -> Self {
        self.singlestore = Some(singlestore);
        self
    }

    /// The same config with another auth service behaviour.
    pub fn with_auth(mut self, auth: AuthConfig) -> Self {
        self.auth = auth;
        self
    }
}

fn loopback_any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A running mock cloud and mock auth service.
pub struct TestServer {
    cloud: MockCloud,
    auth: MockAuth,
    cloud_listeners: Vec<server::Listener>,
    cloud_tls: Option<(server::Listener, String)>,
    auth_listener: server::Listener,
    cloud_faults: Faults,
    auth_faults: Faults,
    cloud_log: RequestLog,
    auth_log: RequestLog,
    singlestore: Option<MockSingleStore>,
}

impl TestServer {
    /// Binds every listener and starts serving.
    pub async fn start(config: TestServerConfig) -> Result<Self, StartError> {
        let keys = match config.key_size {
            Some(bits) => KeySet::generate(bits)?,
            None => KeySet::shared()?,
        };
        let cloud = MockCloud::new(config.cloud, keys.clone());
        let cloud_faults = Faults::default();
        let cloud_log = RequestLog::default();
        let mut cloud_listeners = Vec::new();
        for addr in &config.cloud_addrs {
            let listener = bind(*addr).await?;
            cloud_listeners.push(
                server::spawn(
                    listener,
                    cloud.router(),
                    cloud_faults.clone(),
                    cloud_log.clone(),
                )
                .map_err(|source| StartError::Bind {
                    addr: *addr,
                    source,
                })?,
            );
        }
        let cloud_tls = if config.cloud_tls_names.is_empty() {
            None
        } else {
            let tls = singlestore::tls::MockTls::for_names(
                "s2iam mock cloud CA",
                config.cloud_tls_names.clone(),
            )?;
            let listener = server::spawn_tls(
                bind(loopback_any_port()).await?,
                cloud.router(),
                cloud_faults.clone(),
                cloud_log.clone(),
                tls.server_config.clone(),
            )
            .map_err(|source| StartError::Bind {
                addr: loopback_any_port(),
                source,
            })?;
            Some((listener, tls.ca_pem))
        };
        let sts_url = cloud_listeners.first().map(|l| l.url()).unwrap_or_default();
        // STS is this test server's own listener: never through a proxy.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(StartError::Http)?;
        let verifier = auth::verify::Verifier {
            cloud: cloud.clone(),
            sts_url,
            http,
        };
        let singlestore = match config.singlestore {
            Some(c) => Some(MockSingleStore::start(c, keys.auth.clone()).await?),
            None => None,
        };
        let auth = MockAuth::new(config.auth, keys.auth.clone(), verifier);
        let auth_faults = Faults::default();
        let auth_log = RequestLog::default();
        let auth_listener = server::spawn(
            bind(config.auth_addr).await?,
            auth.router(),
            auth_faults.clone(),
            auth_log.clone(),
        )
        .map_err(|source| StartError::Bind {
            addr: config.auth_addr,
            source,
        })?;
        Ok(Self {
            cloud,
            auth,
            cloud_listeners,
            cloud_tls,
            auth_listener,
            cloud_faults,
            auth_faults,
            cloud_log,
            auth_log,
            singlestore,
        })
    }

    /// `http://127.0.0.1:port` of the (first) mock cloud listener.
    pub fn cloud_url(&self) -> String {
        self.cloud_listeners
            .first()
            .map(|l| l.url())
            .unwrap_or_default()
    }

    /// The bound cloud addresses.
    pub fn cloud_addrs(&self) -> Vec<SocketAddr> {
        self.cloud_listeners.iter().map(|l| l.addr()).collect()
    }

    /// The HTTPS listener of the mock cloud, when
    /// [`TestServerConfig::cloud_tls_names`] were given.
    pub fn cloud_tls_addr(&self) -> Option<SocketAddr> {
        self.cloud_tls.as_ref().map(|(l, _)| l.addr())
    }

    /// The CA (PEM) of the HTTPS listener's certificate.
    pub fn cloud_ca_pem(&self) -> Option<&str> {
        self.cloud_tls.as_ref().map(|(_, ca)| ca.as_str())
    }

    /// `http://127.0.0.1:port` of the mock auth service.
    pub fn auth_url(&self) -> String {
        self.auth_listener.url()
    }

    /// The bound auth service address.
    pub fn auth_addr(&self) -> SocketAddr {
        self.auth_listener.addr()
    }

    /// The exchange URL template clients take (`.../auth/iam/:jwtType`).
    pub fn exchange_url_template(&self) -> String {
        format!("{}/auth/iam/:jwtType", self.auth_url())
    }

    /// The mock cloud, to inspect or reconfigure.
    pub fn cloud(&self) -> &MockCloud {
        &self.cloud
    }

    /// The mock auth service, to inspect or reconfigure.
    pub fn auth(&self) -> &MockAuth {
        &self.auth
    }

    /// Fault rules of the cloud listeners.
    pub fn cloud_faults(&self) -> &Faults {
        &self.cloud_faults
    }

    /// Fault rules of the auth listener.
    pub fn auth_faults(&self) -> &Faults {
        &self.auth_faults
    }

    /// Every request the mock cloud listeners saw.
    pub fn cloud_requests(&self) -> &RequestLog {
        &self.cloud_log
    }

    /// Every request the auth listener saw (details of exchanges are in
    /// [`MockAuth::records`]).
    pub fn auth_requests(&self) -> &RequestLog {
        &self.auth_log
    }

    /// The mock SingleStore, when configured.
    pub fn singlestore(&self) -> Option<&MockSingleStore> {
        self.singlestore.as_ref()
    }

    /// Stops every listener, letting in-flight requests finish briefly.
    pub async fn shutdown(self) {
        if let Some(s) = self.singlestore {
            s.shutdown().await;
        }
        for l in self.cloud_listeners {
            l.shutdown().await;
        }
        if let Some((l, _)) = self.cloud_tls {
            l.shutdown().await;
        }
        self.auth_listener.shutdown().await;
    }
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    server::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}
