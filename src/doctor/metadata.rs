//! Metadata readiness: the detected cloud's metadata service answers the path
//! the identity comes from (the instance role on EC2, the default service
//! account on GCE, the instance document on Azure), with its latency. A GKE pod
//! started before its metadata server, or an instance without a role, shows here.

use std::time::{Duration, Instant};

use super::clock::DateSample;
use super::{millis, Check};
use crate::env::ProviderConfig;
use crate::http::{fetch, Reply, TransportError};
use crate::provider::CloudProvider;

/// The check's id.
pub const ID: &str = "metadata";

/// The check and the metadata service's `Date`, when it answered.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The verdict.
    pub check: Check,
    /// The `Date` of its answer.
    pub date: Option<DateSample>,
}

/// Asks the detected cloud's metadata service. `uses_metadata`: whether the
/// credentials came from it (`Some(false)`: not needed, SKIP).
pub async fn run(
    cfg: &ProviderConfig,
    timeout: Duration,
    provider: Option<CloudProvider>,
    uses_metadata: Option<bool>,
) -> Ready {
    let skip = |m: String| Ready {
        check: Check::skip(ID, m),
        date: None,
    };
    let Some(kind) = provider else {
        return skip("no cloud detected".into());
    };
    if uses_metadata == Some(false) {
        return skip(format!(
            "the {kind} credentials do not come from the metadata service"
        ));
    }
    let e = &cfg.endpoints;
    let started = Instant::now();
    let (url, reply, source) = match kind {
        CloudProvider::Aws => {
            let base = e.aws_imds.trim_end_matches('/');
            let url = format!("{base}/latest/meta-data/iam/security-credentials/");
            let token = imds_token(cfg, base, timeout).await;
            let mut req = cfg.http.get(&url);
            if let Some(t) = &token {
                req = req.header("X-aws-ec2-metadata-token", t.expose());
            }
            (url.clone(), fetch(req, &url, timeout).await, "aws_imds")
        }
        CloudProvider::Gcp => {
            let url = format!(
                "{}/computeMetadata/v1/instance/service-accounts/default/email",
                e.gcp_metadata.trim_end_matches('/')
            );
            let req = cfg.http.get(&url).header("Metadata-Flavor", "Google");
            (url.clone(), fetch(req, &url, timeout).await, "gcp_metadata")
        }
        CloudProvider::Azure => {
            let url = format!(
                "{}/metadata/instance?api-version=2021-02-01",
                e.azure_imds.trim_end_matches('/')
            );
            let req = cfg.http.get(&url).header("Metadata", "true");
            (url.clone(), fetch(req, &url, timeout).await, "azure_imds")
        }
    };
    let ms = millis(started.elapsed());
    let date = reply
        .as_ref()
        .ok()
        .and_then(|r| DateSample::from_header(source, r.header("date"), cfg.clock.now()));
    Ready {
        check: verdict(kind, &url, reply, ms),
        date,
    }
}

async fn imds_token(
    cfg: &ProviderConfig,
    base: &str,
    timeout: Duration,
) -> Option<crate::secret::Secret> {
    let url = format!("{base}/latest/api/token");
    let req = cfg
        .http
        .put(&url)
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60");
    let t = crate::provider::aws::imds::IMDS_TIMEOUT.min(timeout);
    let reply = fetch(req, &url, t).await.ok()?;
    (reply.is_success() && !reply.body.trim().is_empty())
        .then(|| crate::secret::Secret::new(reply.body.trim()))
}

fn verdict(kind: CloudProvider, url: &str, reply: Result<Reply, TransportError>, ms: u64) -> Check {
    let shown = crate::http::display_url(url);
    match reply {
        Err(e) => Check::fail(
            ID,
            format!("the {kind} metadata service did not answer: {e}"),
            "the metadata service may still be starting (GKE, fresh VMs): retry in a few seconds; otherwise check network policies that block 169.254.169.254",
        ),
        Ok(r) if r.is_success() => {
            let what = match kind {
                CloudProvider::Aws => format!("instance role {}", first_line(&r.body)),
                CloudProvider::Gcp => format!("default service account {}", first_line(&r.body)),
                CloudProvider::Azure => "instance metadata".to_string(),
            };
            Check::pass(ID, format!("ready in {ms} ms: {what}")).detail("url", shown)
        }
        Ok(r) if r.status == 404 => Check::fail(
            ID,
            format!("{shown} answered 404: no identity is attached"),
            match kind {
                CloudProvider::Aws => "attach an IAM role to the instance (an instance profile)",
                CloudProvider::Gcp => "attach a service account to the instance",
                CloudProvider::Azure => "assign a managed identity to the VM",
            },
        ),
        Ok(r) => Check::fail(
            ID,
            format!("{shown} answered HTTP {} in {ms} ms", r.status),
            "see the imds_hop_limit check on AWS; a 429 means too many metadata requests (share one s2iam sidecar)",
        ),
    }
}

fn first_line(body: &str) -> String {
    crate::util::snippet(body.lines().next().unwrap_or("").trim(), 200)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn reply(status: u16, body: &str) -> Result<Reply, TransportError> {
        Ok(Reply {
            status,
            headers: Default::default(),
            body: body.into(),
        })
    }

    #[test]
    fn verdicts() {
        let c = verdict(CloudProvider::Aws, "http://x/", reply(200, "role\n"), 3);
        assert_eq!(c.status, Status::Pass);
        assert!(c.message.contains("instance role role"), "{c:?}");
        let c = verdict(CloudProvider::Gcp, "http://x/", reply(404, ""), 3);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("service account"));
        let err = Err(TransportError::Refused {
            url: "http://x/".into(),
        });
        assert_eq!(
            verdict(CloudProvider::Azure, "http://x/", err, 1).status,
            Status::Fail
        );
    }
}
