//! The report for people (one line per check, its fix under it, a closing line
//! saying what a token request will do) and for machines (JSON, schema
//! [`SCHEMA`]).

use std::fmt::Write as _;

use serde::Serialize;

use super::{Check, Outcome, Report, Status};

/// The JSON document's `schema` field; bumped on incompatible changes.
pub const SCHEMA: &str = "s2iam-doctor/1";

#[derive(Serialize)]
struct Counts {
    pass: usize,
    warn: usize,
    fail: usize,
    skip: usize,
}

#[derive(Serialize)]
struct Document<'a> {
    schema: &'static str,
    ok: bool,
    counts: Counts,
    outcome: &'a Outcome,
    checks: &'a [Check],
}

impl Report {
    /// The JSON document: `{"schema", "ok", "counts", "outcome", "checks": [...]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let doc = Document {
            schema: SCHEMA,
            ok: self.ok(),
            counts: Counts {
                pass: self.count(Status::Pass),
                warn: self.count(Status::Warn),
                fail: self.count(Status::Fail),
                skip: self.count(Status::Skip),
            },
            outcome: &self.outcome,
            checks: &self.checks,
        };
        serde_json::to_value(&doc).unwrap_or(serde_json::Value::Null)
    }

    /// The human report.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let width = self.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
        for c in &self.checks {
            let _ = writeln!(
                out,
                "{}  {:width$}  {}",
                c.status.label(),
                c.id,
                c.message,
                width = width
            );
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "      {:width$}  fix: {fix}", "", width = width);
            }
        }
        let _ = writeln!(
            out,
            "\n{} PASS, {} WARN, {} FAIL, {} SKIP",
            self.count(Status::Pass),
            self.count(Status::Warn),
            self.count(Status::Fail),
            self.count(Status::Skip)
        );
        let _ = writeln!(out, "{}", self.outcome.sentence(self.ok()));
        out
    }
}

impl Outcome {
    /// "A token request will ..." in one sentence.
    pub fn sentence(&self, ok: bool) -> String {
        let Some(provider) = self.provider else {
            return "A token request will fail: no cloud detected.".into();
        };
        let how = self.detected_by.as_deref().unwrap_or("?");
        let source = self
            .credential_source
            .as_deref()
            .unwrap_or("no credentials");
        let whom = match (&self.sub, &self.identity_format) {
            (Some(sub), Some(format)) => format!("sub {sub} ({format})"),
            _ => "no identity".into(),
        };
        let server = self
            .auth_server
            .as_deref()
            .unwrap_or("an invalid auth service URL");
        let verdict = if ok {
            "A token request will"
        } else {
            "A token request would (once the FAILs are fixed)"
        };
        format!("{verdict} use {provider} ({how}), credentials from {source}, and be issued {whom} by {server}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::CloudProvider;

    fn report() -> Report {
        Report {
            checks: vec![
                Check::pass("detect", "aws from metadata"),
                Check::warn("proxy", "captured", "add to NO_PROXY"),
                Check::skip("token_files", "none"),
            ],
            outcome: Outcome {
                provider: Some(CloudProvider::Aws),
                detected_by: Some("metadata".into()),
                credential_source: Some("instance role".into()),
                sub: Some("arn:aws:iam::1:role/r".into()),
                identity_format: Some("aws-iam-role-arn".into()),
                auth_server: Some("https://a/auth/iam/:jwtType".into()),
            },
        }
    }

    #[test]
    fn text_has_one_line_per_check_and_fixes() {
        let text = report().to_text();
        assert!(
            text.contains("PASS  detect       aws from metadata"),
            "{text}"
        );
        assert!(text.contains("fix: add to NO_PROXY"), "{text}");
        assert!(text.contains("1 PASS, 1 WARN, 0 FAIL, 1 SKIP"), "{text}");
        assert!(
            text.contains("A token request will use aws (metadata)"),
            "{text}"
        );
    }

    #[test]
    fn json_schema() {
        let mut r = report();
        let v = r.to_json();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["ok"], true);
        assert_eq!(v["counts"]["warn"], 1);
        assert_eq!(v["checks"][1]["status"], "warn");
        assert_eq!(v["checks"][1]["fix"], "add to NO_PROXY");
        assert_eq!(v["outcome"]["provider"], "aws");
        r.checks.push(Check::fail("clock_skew", "far", "sync"));
        assert_eq!(r.to_json()["ok"], false);
        assert!(r.to_text().contains("once the FAILs are fixed"));
    }
}
