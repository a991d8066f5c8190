//! `s2iam-testserver`: the mock auth service (flags of the reference
//! `s2iam_test_server`) and, with `--cloud`, the mock cloud beside it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use s2iam_testserver::util::parse_go_duration;
use s2iam_testserver::{
    info, ApiConfig, AuthConfig, CloudConfig, MockApiServer, TestServer, TestServerConfig,
};
use tokio::io::AsyncReadExt;

/// The cloud and the auth service in a box.
///
/// Examples:
///   s2iam-testserver --port 0 --info-file /tmp/ts.json --cloud gcp
///   s2iam-testserver --port 8080 --fail-verification
///   s2iam-testserver --cloud aws --cloud-listen 169.254.169.254:80   (inside an isolated netns)
///   s2iam-testserver --port 0 --cloud gcp --singlestore-port 0 --singlestore-ca-file /tmp/ca.pem
///   s2iam-testserver --port 0 --cloud gcp --api-listen 127.0.0.1:0    (plus the Data and Management APIs)
#[derive(Debug, Parser)]
#[command(name = "s2iam-testserver", version, verbatim_doc_comment)]
struct Args {
    /// Port for the auth service (0 = a random free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address the auth service binds. Loopback by default, unlike the reference,
    /// so a test server is never reachable from the network by accident.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Write {"server_info": {...}} here atomically once listening.
    #[arg(long)]
    info_file: Option<PathBuf>,
    /// Exit when standard input is closed (for harnesses that own the process).
    #[arg(long)]
    shutdown_on_stdin_close: bool,
    /// Answer 401 to every exchange.
    #[arg(long)]
    fail_verification: bool,
    /// Answer {"jwt": ""} after verifying.
    #[arg(long)]
    return_empty_jwt: bool,
    /// Answer --error-code with --error-message to every exchange.
    #[arg(long)]
    return_error: bool,
    #[arg(long, default_value_t = 500)]
    error_code: u16,
    #[arg(long, default_value = "Internal Server Error")]
    error_message: String,
    /// GCP tokens must have exactly this audience.
    #[arg(long)]
    required_audience: Option<String>,
    /// Comma-separated audiences accepted on GCP tokens.
    #[arg(long, default_value = "https://authsvc.singlestore.com")]
    allowed_audiences: String,
    /// Azure tenant whose tokens are accepted ("common" = any).
    #[arg(long, default_value = "common")]
    azure_tenant: String,
    /// Lifetime of issued JWTs (Go duration: 1h, 90s, 250ms).
    #[arg(long, default_value = "1h", value_parser = parse_go_duration)]
    token_expiry: Duration,
    /// RSA key size of freshly generated signing keys.
    #[arg(long, default_value_t = 2048)]
    key_size: usize,
    /// Shut down after this long (0 = run until stopped).
    #[arg(long, default_value = "0", value_parser = parse_go_duration)]
    timeout: Duration,
    /// Log every request.
    #[arg(long)]
    verbose: bool,
    /// Also serve the mock cloud as this cloud: aws, gcp, azure or none.
    #[arg(long)]
    cloud: Option<String>,
    /// Where the mock cloud listens (repeatable). Default 127.0.0.1:0.
    #[arg(long)]
    cloud_listen: Vec<SocketAddr>,
    /// Lifetime of credentials and tokens the mock cloud issues (Go duration).
    #[arg(long, default_value = "1h", value_parser = parse_go_duration)]
    cloud_token_ttl: Duration,
    /// Where the mock Azure Arc agent writes its challenge key files (default: a
    /// private temporary directory). Real clients insist on /var/opt/azcmagent/tokens.
    #[arg(long)]
    azure_arc_key_dir: Option<PathBuf>,
    /// How the mock Azure Arc agent answers the first request: normal,
    /// missing-header, wrong-directory, not-key-suffix or oversize-key (the last four
    /// are challenges clients must refuse).
    #[arg(long, default_value = "normal")]
    azure_arc_challenge: s2iam_testserver::ArcChallenge,
    /// How far the mock cloud's clock is ahead of this machine's (Go duration,
    /// `-` for behind: 10m, -10m, 90s): the `Date` header of every mock cloud
    /// response and STS's signature time check use it.
    #[arg(long, default_value = "0", allow_hyphen_values = true, value_parser = parse_signed_go_duration)]
    cloud_clock_offset: i64,
    /// Also run a mock SingleStore (MySQL protocol over TLS, JWT login) on this
    /// loopback port (0 = a random free port).
    #[arg(long)]
    singlestore_port: Option<u16>,
    /// Name in the mock SingleStore's server certificate.
    #[arg(long, default_value = "singlestore.mock")]
    singlestore_server_name: String,
    /// Accept only database JWTs for this workspace group (default: any).
    #[arg(long)]
    singlestore_workspace_group: Option<String>,
    /// Write the CA certificate (PEM) that signed the mock SingleStore's certificate here.
    #[arg(long)]
    singlestore_ca_file: Option<PathBuf>,
    /// Rows of `SELECT * FROM s2iam_rows` (the large result set).
    #[arg(long, default_value_t = 100_000)]
    singlestore_rows: usize,
    /// Bytes of each row's payload.
    #[arg(long, default_value_t = 100)]
    singlestore_row_bytes: usize,
    /// Also serve the mock Data API and Management API here (loopback; port 0 = any).
    #[arg(long)]
    api_listen: Option<SocketAddr>,
    /// The workspace group of the mock Data API (database JWTs must name it).
    #[arg(long, default_value = "wg-1")]
    api_workspace_group: String,
    /// Rows of `SELECT * FROM large` on the mock Data API.
    #[arg(long, default_value_t = 100_000)]
    api_large_rows: u64,
}

fn auth_config(args: &Args) -> AuthConfig {
    AuthConfig {
        fail_verification: args.fail_verification,
        return_empty_jwt: args.return_empty_jwt,
        return_error: args.return_error,
        error_code: args.error_code,
        error_message: args.error_message.clone(),
        required_audience: args.required_audience.clone().filter(|s| !s.is_empty()),
        allowed_audiences: args
            .allowed_audiences
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        azure_tenant: args.azure_tenant.clone(),
        token_expiry: args.token_expiry,
    }
}

fn server_config(args: &Args) -> anyhow::Result<TestServerConfig> {
    let mut cloud = match args.cloud.as_deref() {
        None => CloudConfig::none(),
        Some(name) => CloudConfig::named(name)
            .with_context(|| format!("unknown --cloud {name:?}: use aws, gcp, azure or none"))?,
    };
    cloud.token_ttl = args.cloud_token_ttl;
    if let Some(az) = cloud.azure.as_mut() {
        az.arc_key_dir = args.azure_arc_key_dir.clone();
        az.arc_challenge = args.azure_arc_challenge;
    }
    cloud.clock_offset_secs = args.cloud_clock_offset;
    let mut config = TestServerConfig::new(cloud).with_auth(auth_config(args));
    config.auth_addr = SocketAddr::new(args.host, args.port);
    if !args.cloud_listen.is_empty() {
        config.cloud_addrs = args.cloud_listen.clone();
    }
    if let Some(port) = args.singlestore_port {
        config.singlestore = Some(s2iam_testserver::SingleStoreConfig {
            addr: SocketAddr::new(args.host, port),
            server_name: args.singlestore_server_name.clone(),
            workspace_group_id: args.singlestore_workspace_group.clone(),
            large_rows: args.singlestore_rows,
            large_row_bytes: args.singlestore_row_bytes,
        });
    }
    if args.key_size != 2048 {
        config.key_size = Some(args.key_size);
    }
    if !(1024..=8192).contains(&args.key_size) {
        anyhow::bail!("--key-size must be between 1024 and 8192");
    }
    Ok(config)
}

/// A Go duration with an optional sign, as whole seconds (`-10m` is -600).
fn parse_signed_go_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (negative, rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let secs = i64::try_from(parse_go_duration(rest)?.as_secs())
        .map_err(|_| format!("duration {s:?} is too large"))?;
    Ok(if negative {
        secs.saturating_neg()
    } else {
        secs
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = if args.verbose { "debug" } else { "info" };
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: logs in files and CI carry no escapes.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .init();
    let config = server_config(&args)?;
    let server = TestServer::start(config).await?;
    let cloud_urls: Vec<String> = server
        .cloud_addrs()
        .iter()
        .map(|a| format!("http://{a}"))
        .collect();
    let mut doc = info::server_info(server.auth_addr().port(), &server.auth_url(), &cloud_urls);
    if let Some(db) = server.singlestore() {
        if let Some(path) = &args.singlestore_ca_file {
            std::fs::write(path, db.ca_pem()).with_context(|| {
                format!("cannot write --singlestore-ca-file {}", path.display())
            })?;
        }
        doc["server_info"]["singlestore"] = serde_json::json!({
            "addr": db.addr().to_string(),
            "port": db.addr().port(),
            "server_name": db.server_name(),
            "ca_file": args.singlestore_ca_file,
        });
    }
    let api = match args.api_listen {
        Some(addr) => {
            let config = ApiConfig {
                workspace_group_id: args.api_workspace_group.clone(),
                large_rows: args.api_large_rows,
            };
            let api = MockApiServer::start(config, server.auth().key().clone(), addr).await?;
            info::add_api_endpoints(&mut doc, &api.url());
            Some(api)
        }
        None => None,
    };
    if let Some(path) = &args.info_file {
        info::write_atomic(path, &doc)
            .with_context(|| format!("cannot write --info-file {}", path.display()))?;
    }
    println!("{}", serde_json::to_string_pretty(&doc)?);
    tracing::info!(auth = %server.auth_url(), cloud = ?cloud_urls, "s2iam-testserver listening");

    wait_for_stop(&args).await;
    tracing::info!("shutting down");
    if let Some(api) = api {
        api.shutdown().await;
    }
    server.shutdown().await;
    Ok(())
}

async fn wait_for_stop(args: &Args) {
    let stdin_closed = async {
        if args.shutdown_on_stdin_close {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 256];
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        } else {
            std::future::pending::<()>().await;
        }
    };
    let timeout = async {
        if args.timeout.is_zero() {
            std::future::pending::<()>().await;
        } else {
            tokio::time::sleep(args.timeout).await;
        }
    };
    let terminate = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = stdin_closed => {}
        _ = timeout => {}
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offsets_parse_with_a_sign() {
        assert_eq!(parse_signed_go_duration("10m"), Ok(600));
        assert_eq!(parse_signed_go_duration("+90s"), Ok(90));
        assert_eq!(parse_signed_go_duration("-10m"), Ok(-600));
        assert_eq!(parse_signed_go_duration("0"), Ok(0));
        assert!(parse_signed_go_duration("-").is_err());
        assert!(parse_signed_go_duration("10").is_err());
        let args = Args::parse_from([
            "s2iam-testserver",
            "--cloud",
            "aws",
            "--cloud-clock-offset",
            "-10m",
        ]);
        assert_eq!(server_config(&args).unwrap().cloud.clock_offset_secs, -600);
    }
}
