//! Which cloud, and how: the environment evidence the client's fast path would
//! take, then every metadata probe run to the end (not raced, unlike
//! [`crate::provider::detect`]) so the report has each one's answer and timing.

use std::fmt;
use std::time::{Duration, Instant};

use super::{millis, within, Check, DoctorOptions};
use crate::env::ProviderConfig;
use crate::provider::aws::AwsProvider;
use crate::provider::azure::AzureProvider;
use crate::provider::detect::fast_detect;
use crate::provider::gcp::GcpProvider;
use crate::provider::{CloudProvider, ProbeError};

/// The check's id.
pub const ID: &str = "detect";

/// How the client will pick the cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `--provider`.
    Explicit,
    /// Fast path: this evidence in the environment.
    Environment(String),
    /// The metadata probe that answered.
    Metadata,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Explicit => "explicit",
            Method::Environment(_) => "environment",
            Method::Metadata => "metadata",
        })
    }
}

/// The cloud the client will use, and how it finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// The cloud.
    pub provider: CloudProvider,
    /// How.
    pub method: Method,
}

/// One metadata probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The cloud probed.
    pub provider: CloudProvider,
    /// `Ok` when its metadata service answered as that cloud's; `None` in the
    /// error: no answer before the deadline.
    pub result: Result<(), Option<ProbeError>>,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Everything detection found.
#[derive(Debug, Clone)]
pub struct Detection {
    /// The choice, when there is one.
    pub chosen: Option<Chosen>,
    /// Every probe, in `CloudProvider::ALL` order.
    pub probes: Vec<Probe>,
    /// The deadline each probe had.
    pub timeout: Duration,
}

/// Runs the fast path and every probe (concurrently, each bounded by the timeout).
pub async fn run(cfg: &ProviderConfig, opts: &DoctorOptions) -> Detection {
    let timeout = opts.timeout;
    let timed = |kind: CloudProvider| async move {
        let started = Instant::now();
        let fut = async {
            match kind {
                CloudProvider::Aws => AwsProvider::probe(cfg).await,
                CloudProvider::Gcp => GcpProvider::probe(cfg).await,
                CloudProvider::Azure => AzureProvider::probe(cfg).await,
            }
        };
        let result = match within(timeout, fut).await {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(Some(e)),
            None => Err(None),
        };
        Probe {
            provider: kind,
            result,
            elapsed: started.elapsed(),
        }
    };
    let (aws, gcp, azure) = tokio::join!(
        timed(CloudProvider::Aws),
        timed(CloudProvider::Gcp),
        timed(CloudProvider::Azure)
    );
    let probes = vec![aws, gcp, azure];
    let evidence = if opts.force_detect {
        None
    } else {
        fast_detect(cfg)
    };
    let chosen = match (opts.provider, evidence) {
        (Some(provider), _) => Some(Chosen {
            provider,
            method: Method::Explicit,
        }),
        (None, Some((provider, why))) => Some(Chosen {
            provider,
            method: Method::Environment(why),
        }),
        (None, None) => probes
            .iter()
            .filter(|p| p.result.is_ok())
            .min_by_key(|p| p.elapsed)
            .map(|p| Chosen {
                provider: p.provider,
                method: Method::Metadata,
            }),
    };
    Detection {
        chosen,
        probes,
        timeout,
    }
}

fn describe_probe(p: &Probe, timeout: Duration) -> String {
    let ms = millis(p.elapsed);
    match &p.result {
        Ok(()) => format!("answered in {ms} ms"),
        Err(Some(e)) => format!("{e} ({ms} ms)"),
        Err(None) => format!("no answer within {} ms", millis(timeout)),
    }
}

/// The verdict on `d`.
pub fn check(d: &Detection) -> Check {
    let probes: Vec<String> = d
        .probes
        .iter()
        .map(|p| format!("{}: {}", p.provider, describe_probe(p, d.timeout)))
        .collect();
    let mut details = std::collections::BTreeMap::new();
    for p in &d.probes {
        details.insert(
            format!("probe.{}", p.provider),
            describe_probe(p, d.timeout),
        );
    }
    let Some(chosen) = &d.chosen else {
        let mut c = Check::fail(
            ID,
            format!("no cloud detected: {}", probes.join("; ")),
            "run on AWS, GCP or Azure compute (or point the endpoint variables at a metadata service), or name the cloud with --provider and give it credentials (e.g. AWS_ACCESS_KEY_ID, AZURE_FEDERATED_TOKEN_FILE)",
        );
        c.details = details;
        return c;
    };
    details.insert("provider".into(), chosen.provider.to_string());
    details.insert("method".into(), chosen.method.to_string());
    let how = match &chosen.method {
        Method::Explicit => "chosen with --provider".to_string(),
        Method::Environment(why) => {
            format!("from the environment ({why}; the client does not probe)")
        }
        Method::Metadata => "its metadata service answered first".to_string(),
    };
    let message = format!("{}: {how}; probes: {}", chosen.provider, probes.join("; "));
    let answered = |kind: CloudProvider| {
        d.probes
            .iter()
            .any(|p| p.provider == kind && p.result.is_ok())
    };
    let other = d
        .probes
        .iter()
        .find(|p| p.provider != chosen.provider && p.result.is_ok())
        .map(|p| p.provider);
    let mut c = match (&chosen.method, other) {
        (Method::Environment(why), Some(other)) if !answered(chosen.provider) => Check::warn(
            ID,
            format!(
                "{message}; the environment says {} ({why}) but {other}'s metadata service answered: the client will use {} without probing",
                chosen.provider, chosen.provider
            ),
            format!(
                "if this is {other}, unset the variable or pass --provider {other} (or --force-detect)"
            ),
        ),
        _ => Check::pass(ID, message),
    };
    c.details = details;
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn probe(provider: CloudProvider, ok: bool, ms: u64) -> Probe {
        Probe {
            provider,
            result: if ok { Ok(()) } else { Err(None) },
            elapsed: Duration::from_millis(ms),
        }
    }

    #[test]
    fn nothing_detected_fails_with_every_probe() {
        let d = Detection {
            chosen: None,
            probes: vec![
                probe(CloudProvider::Aws, false, 1000),
                Probe {
                    provider: CloudProvider::Gcp,
                    result: Err(Some(ProbeError::Refused {
                        url: "http://x".into(),
                    })),
                    elapsed: Duration::from_millis(1),
                },
            ],
            timeout: Duration::from_secs(1),
        };
        let c = check(&d);
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("aws: no answer within 1000 ms"), "{c:?}");
        assert!(
            c.message.contains("gcp: connection refused by http://x"),
            "{c:?}"
        );
        assert!(c.fix.is_some());
    }

    #[test]
    fn environment_contradicted_by_another_cloud_warns() {
        let d = Detection {
            chosen: Some(Chosen {
                provider: CloudProvider::Aws,
                method: Method::Environment("AWS_REGION is set".into()),
            }),
            probes: vec![
                probe(CloudProvider::Aws, false, 5),
                probe(CloudProvider::Gcp, true, 3),
            ],
            timeout: Duration::from_secs(1),
        };
        let c = check(&d);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.message.contains("gcp's metadata service answered"),
            "{c:?}"
        );
        assert!(c.fix.unwrap().contains("--provider gcp"));
    }

    #[test]
    fn environment_evidence_is_named() {
        let d = Detection {
            chosen: Some(Chosen {
                provider: CloudProvider::Aws,
                method: Method::Environment("AWS_REGION is set".into()),
            }),
            probes: vec![probe(CloudProvider::Aws, false, 5)],
            timeout: Duration::from_secs(1),
        };
        let c = check(&d);
        assert_eq!(c.status, Status::Pass);
        assert!(c.message.contains("AWS_REGION is set"), "{c:?}");
        assert_eq!(c.details["method"], "environment");
    }
}
