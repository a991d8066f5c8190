//! The record of successful calls (`MockCloud::sts_calls`, `GET /_mock/sts/calls`).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::params::Action;
use crate::cloud::{AwsCredential, MockCloud};

/// One successful STS call, as tests want to see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StsCall {
    /// The STS action.
    pub action: String,
    /// ARN of the signing credential (`None` for `AssumeRoleWithWebIdentity`).
    pub caller_arn: Option<String>,
    /// The signing access key id.
    pub caller_access_key_id: Option<String>,
    /// `RoleArn`.
    pub role_arn: Option<String>,
    /// `RoleSessionName`.
    pub role_session_name: Option<String>,
    /// `DurationSeconds`.
    pub duration_seconds: Option<u64>,
    /// `ExternalId`.
    pub external_id: Option<String>,
    /// The session policy (`Policy`), parsed.
    pub policy: Option<Value>,
    /// Managed session policies (`PolicyArns.member.N.arn`).
    pub policy_arns: Vec<String>,
    /// `sub` of the web identity token.
    pub web_identity_subject: Option<String>,
    /// Access key id of the credentials issued, if any.
    pub issued_access_key_id: Option<String>,
}

impl StsCall {
    pub(super) fn new(action: Action, caller: Option<&AwsCredential>) -> Self {
        Self {
            action: action.name().to_string(),
            caller_arn: caller.map(|c| c.arn.clone()),
            caller_access_key_id: caller.map(|c| c.access_key_id.clone()),
            role_arn: None,
            role_session_name: None,
            duration_seconds: None,
            external_id: None,
            policy: None,
            policy_arns: Vec::new(),
            web_identity_subject: None,
            issued_access_key_id: None,
        }
    }
}

/// STS-side state: the call record.
#[derive(Default)]
pub(crate) struct StsState {
    calls: Mutex<Vec<StsCall>>,
}

impl MockCloud {
    /// Every successful STS call so far, oldest first.
    pub fn sts_calls(&self) -> Vec<StsCall> {
        self.lock_sts_calls().clone()
    }

    /// Forgets the recorded STS calls.
    pub fn clear_sts_calls(&self) {
        self.lock_sts_calls().clear();
    }

    /// The `Policy` of the most recent successful `AssumeRole` or
    /// `AssumeRoleWithWebIdentity` (`None` if that call sent none, or there was none).
    pub fn last_session_policy(&self) -> Option<Value> {
        self.lock_sts_calls()
            .iter()
            .rev()
            .find(|c| c.action.starts_with("AssumeRole"))
            .and_then(|c| c.policy.clone())
    }

    pub(super) fn record_sts_call(&self, call: StsCall) {
        let mut calls = self.lock_sts_calls();
        if calls.len() >= 100_000 {
            calls.drain(..10_000);
        }
        calls.push(call);
    }

    fn lock_sts_calls(&self) -> std::sync::MutexGuard<'_, Vec<StsCall>> {
        self.inner
            .sts
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}
