//! An `admission.k8s.io/v1` AdmissionReview in, one out: the object is mutated by
//! [`super::mutate`] and the answer carries the JSONPatch from the object as sent to
//! the object as mutated (base64, `patchType: JSONPatch`). An object whose
//! annotations s2iam cannot use is refused (403 with the reason): a pod that asked
//! for credentials and would start without them is worse than one that does not
//! start. Operations other than CREATE and UPDATE are allowed unchanged.
//!
//! Dry-run requests (`request.dryRun: true`) get the same answer: the mutation has
//! no side effects (the webhook is registered with `sideEffects: None`); they are
//! only counted apart in the log line.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::inject::{mutate, Options, Outcome};
use super::patch::diff;

/// Why a request body is not an AdmissionReview s2iam can answer (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON.
    #[error("the body is not JSON: {0}")]
    Json(String),
    /// Not an `admission.k8s.io/v1` AdmissionReview with a request and its uid.
    #[error("not an admission.k8s.io/v1 AdmissionReview with request.uid")]
    NotAReview,
}

/// What happened to one review, for the log (never the object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `CREATE`, `UPDATE`, ...
    pub operation: String,
    /// The object's kind.
    pub kind: String,
    /// `request.dryRun`.
    pub dry_run: bool,
    /// The mutation's outcome, or the refusal.
    pub result: Result<Outcome, String>,
    /// Operations in the patch.
    pub patch_ops: usize,
}

/// Answers one AdmissionReview body.
pub fn review(body: &[u8], options: &Options) -> Result<(Value, Decision), ReviewError> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| ReviewError::Json(e.to_string()))?;
    if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
        return Err(ReviewError::NotAReview);
    }
    let request = &review["request"];
    let uid = request["uid"].as_str().ok_or(ReviewError::NotAReview)?;
    let operation = request["operation"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut decision = Decision {
        kind: request
            .pointer("/kind/kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        dry_run: request["dryRun"] == true,
        result: Ok(Outcome::NotAnnotated),
        patch_ops: 0,
        operation,
    };
    let mut response = json!({"uid": uid, "allowed": true});
    let object = &request["object"];
    if matches!(decision.operation.as_str(), "CREATE" | "UPDATE") && object.is_object() {
        let mut mutated = object.clone();
        match mutate(&mut mutated, options) {
            Ok(outcome) => {
                decision.result = Ok(outcome);
                let ops = diff(object, &mutated);
                decision.patch_ops = ops.len();
                if !ops.is_empty() {
                    let patch = serde_json::to_vec(&ops).unwrap_or_default();
                    response["patchType"] = json!("JSONPatch");
                    response["patch"] = json!(STANDARD.encode(patch));
                }
            }
            Err(e) => {
                let message = e.to_string();
                decision.result = Err(message.clone());
                response["allowed"] = json!(false);
                response["status"] = json!({"code": 403, "reason": "Forbidden", "message": format!("s2iam: {message}")});
            }
        }
    }
    let answer = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    Ok((answer, decision))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "annotations": annotations},
               "spec": {"containers": [{"name": "app", "image": "app:1"}]}})
    }

    fn request(op: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "operation": op, "object": object, "dryRun": true}
        }))
        .unwrap()
    }

    #[test]
    fn annotated_pods_get_a_patch_others_none() {
        let (answer, d) = review(
            &request(
                "CREATE",
                pod(json!({"s2iam.singlestore.com/inject": "true"})),
            ),
            &Options::default(),
        )
        .unwrap();
        assert_eq!(answer["response"]["uid"], "u-1");
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        assert!(d.dry_run && d.patch_ops > 0);
        let (answer, d) = review(&request("CREATE", pod(json!({}))), &Options::default()).unwrap();
        assert!(answer["response"].get("patch").is_none());
        assert_eq!(d.result, Ok(Outcome::NotAnnotated));
        let (answer, _) = review(
            &request(
                "DELETE",
                pod(json!({"s2iam.singlestore.com/inject": "true"})),
            ),
            &Options::default(),
        )
        .unwrap();
        assert!(answer["response"].get("patch").is_none());
    }

    #[test]
    fn bad_annotations_are_refused_with_the_reason() {
        let (answer, _) = review(
            &request(
                "CREATE",
                pod(json!({"s2iam.singlestore.com/inject": "true", "s2iam.singlestore.com/database-proxy": "nope"})),
            ),
            &Options::default(),
        )
        .unwrap();
        assert_eq!(answer["response"]["allowed"], false);
        let msg = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(msg.contains("database-proxy"), "{msg}");
    }

    #[test]
    fn not_a_review() {
        assert!(matches!(
            review(b"{", &Options::default()),
            Err(ReviewError::Json(_))
        ));
        assert_eq!(
            review(br#"{"kind":"AdmissionReview"}"#, &Options::default()).unwrap_err(),
            ReviewError::NotAReview
        );
    }
}
