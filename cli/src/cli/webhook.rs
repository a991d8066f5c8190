//! `s2iam webhook`: the mutating admission webhook (see `s2iam_sidecar::kube::webhook`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::CliError;

/// `s2iam webhook --listen ADDR --tls-cert FILE --tls-key FILE`.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Address to serve HTTPS on (the Service's target port).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain (read again when the file changes).
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// PEM private key.
    #[arg(long)]
    pub tls_key: PathBuf,
    /// The sidecar image for pods whose `s2iam.singlestore.com/image` annotation
    /// does not name one.
    #[arg(long, default_value_t = s2iam_sidecar::kube::inject::default_image())]
    pub image: String,
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(args: &WebhookArgs) -> Result<(), CliError> {
    super::logging::init_with_default("info");
    let webhook =
        s2iam_sidecar::kube::webhook::Webhook::start(s2iam_sidecar::kube::webhook::WebhookConfig {
            listen: args.listen,
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
            options: s2iam_sidecar::kube::Options {
                image: args.image.clone(),
                update: false,
            },
        })
        .await?;
    tracing::info!(addr = %webhook.addr, version = env!("CARGO_PKG_VERSION"), "s2iam webhook listening");
    super::shutdown_signal().await;
    webhook.stop();
    tracing::info!("s2iam webhook stopped");
    Ok(())
}
