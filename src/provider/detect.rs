//! Cloud detection.
//!
//! Phase 1 reads only the environment: each provider's `fast_detect` looks for the
//! variables its platform sets (listed in each provider's module), in the order
//! AWS, GCP, Azure.
//! Phase 2 probes every metadata service concurrently under one overall deadline;
//! the first positive answer wins and the other probes are cancelled.
//! Phase 3, when nothing answered, developer credentials, in phase 1's order: gcloud's
//! application-default credentials file means GCP ([`GcpProvider::fallback_detect`]),
//! else the Azure CLI installed means Azure, its login the identity
//! ([`AzureProvider::fallback_detect`], as azure-identity's `DefaultAzureCredential`
//! ends with the CLI; `S2IAM_AZURE_CLI=off` turns it off). Both are ambient rather
//! than chosen, so they never outrank a metadata service that answers.
//! Otherwise the error says per provider what was tried and why it failed.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::aws::AwsProvider;
use super::azure::AzureProvider;
use super::gcp::GcpProvider;
use super::{CloudProvider, ProbeError, Provider};
use crate::env::ProviderConfig;

/// Reference default for the whole detection (the Go client's 5 s).
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to detect.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// Overall deadline of phase 2.
    pub timeout: Duration,
    /// Skip detection: use this provider.
    pub provider: Option<CloudProvider>,
    /// Skip phase 1 and always probe the network (the environment can lie, e.g. a
    /// laptop with `AWS_REGION` set).
    pub skip_fast_path: bool,
}

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_DETECT_TIMEOUT,
            provider: None,
            skip_fast_path: false,
        }
    }
}

/// How the provider was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectionMethod {
    /// Chosen by the caller.
    Explicit,
    /// Phase 1: this evidence in the environment.
    Environment(String),
    /// Phase 2: the metadata service answered.
    Metadata,
}

/// A detected provider and how it was found.
#[derive(Debug, Clone)]
pub struct Detection {
    /// The cloud found.
    pub provider: Provider,
    /// How it was found.
    pub method: DetectionMethod,
    /// How long detection took.
    pub elapsed: Duration,
}

/// One provider's probe result in a failed detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The cloud probed.
    pub provider: CloudProvider,
    /// `None`: still running when the deadline passed.
    pub error: Option<ProbeError>,
    /// How long its probe ran.
    pub elapsed: Duration,
}

/// No cloud found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no cloud provider detected after {elapsed_ms} ms: {}", describe(.attempts))]
pub struct DetectError {
    /// Every provider's probe.
    pub attempts: Vec<Attempt>,
    /// How long detection took.
    pub elapsed_ms: u64,
}

fn describe(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| match &a.error {
            Some(e) => format!("{}: {e}", a.provider),
            None => format!(
                "{}: no answer before the detection deadline ({} ms)",
                a.provider,
                a.elapsed.as_millis()
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Finds the cloud this process runs on.
pub async fn detect_provider(
    cfg: &ProviderConfig,
    opts: &DetectOptions,
) -> Result<Detection, DetectError> {
    let start = Instant::now();
    if let Some(kind) = opts.provider {
        return Ok(Detection {
            provider: Provider::for_kind(kind),
            method: DetectionMethod::Explicit,
            elapsed: start.elapsed(),
        });
    }
    if !opts.skip_fast_path {
        if let Some((kind, evidence)) = fast_detect(cfg) {
            return Ok(Detection {
                provider: Provider::for_kind(kind),
                method: DetectionMethod::Environment(evidence),
                elapsed: start.elapsed(),
            });
        }
    }
    match probe_all(cfg, opts.timeout, start).await {
        Err(e) => match fallback_detect(cfg) {
            Some((kind, evidence)) => {
                tracing::debug!(probes = %e, provider = %kind, "no metadata service answered: using developer credentials");
                Ok(Detection {
                    provider: Provider::for_kind(kind),
                    method: DetectionMethod::Environment(evidence),
                    elapsed: start.elapsed(),
                })
            }
            None => Err(e),
        },
        found => found,
    }
}

/// Phase 3: developer credentials, when no metadata service answered.
pub fn fallback_detect(cfg: &ProviderConfig) -> Option<(CloudProvider, String)> {
    GcpProvider::fallback_detect(cfg)
        .map(|e| (CloudProvider::Gcp, e))
        .or_else(|| AzureProvider::fallback_detect(cfg).map(|e| (CloudProvider::Azure, e)))
}

/// Phase 1: the first provider with evidence in the environment.
pub fn fast_detect(cfg: &ProviderConfig) -> Option<(CloudProvider, String)> {
    AwsProvider::fast_detect(cfg)
        .map(|e| (CloudProvider::Aws, e))
        .or_else(|| GcpProvider::fast_detect(cfg).map(|e| (CloudProvider::Gcp, e)))
        .or_else(|| AzureProvider::fast_detect(cfg).map(|e| (CloudProvider::Azure, e)))
}

async fn probe_all(
    cfg: &ProviderConfig,
    timeout: Duration,
    start: Instant,
) -> Result<Detection, DetectError> {
    let e = &cfg.endpoints;
    tracing::debug!(
        aws_imds = %e.aws_imds,
        ecs_credentials = %e.ecs_credentials,
        gcp_metadata = %e.gcp_metadata_probe,
        azure_imds = %e.azure_imds,
        timeout_ms = timeout.as_millis() as u64,
        "no cloud named in the environment (AWS_*/ECS_*, GOOGLE_*/GCE_*, AZURE_*/IDENTITY_*/MSI_*): probing the metadata services"
    );
    let mut probes = JoinSet::new();
    for kind in CloudProvider::ALL {
        let cfg = cfg.clone();
        probes.spawn(async move {
            let began = Instant::now();
            let result = match kind {
                CloudProvider::Aws => AwsProvider::probe(&cfg).await,
                CloudProvider::Gcp => GcpProvider::probe(&cfg).await,
                CloudProvider::Azure => AzureProvider::probe(&cfg).await,
            };
            (kind, result, began.elapsed())
        });
    }
    let deadline = tokio::time::Instant::from_std(crate::util::instant_after(start, timeout));
    let mut attempts: Vec<Attempt> = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, probes.join_next()).await {
            Ok(Some(Ok((kind, Ok(()), _)))) => {
                // Dropping the JoinSet aborts the losing probes.
                return Ok(Detection {
                    provider: Provider::for_kind(kind),
                    method: DetectionMethod::Metadata,
                    elapsed: start.elapsed(),
                });
            }
            Ok(Some(Ok((kind, Err(error), elapsed)))) => {
                tracing::debug!(provider = %kind, elapsed_ms = elapsed.as_millis() as u64, %error, "probe found nothing");
                attempts.push(Attempt {
                    provider: kind,
                    error: Some(error),
                    elapsed,
                })
            }
            Ok(Some(Err(join_error))) => {
                tracing::warn!(error = %join_error, "a detection probe task failed");
            }
            Ok(None) | Err(_) => break,
        }
    }
    for kind in CloudProvider::ALL {
        if !attempts.iter().any(|a| a.provider == kind) {
            tracing::debug!(provider = %kind, "probe still waiting at the detection deadline (a metadata address that accepts and never answers, or a firewall that drops)");
            attempts.push(Attempt {
                provider: kind,
                error: None,
                elapsed: start.elapsed(),
            });
        }
    }
    attempts.sort_by_key(|a| CloudProvider::ALL.iter().position(|p| *p == a.provider));
    Err(DetectError {
        attempts,
        elapsed_ms: start.elapsed().as_millis() as u64,
    })
}
