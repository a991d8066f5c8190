//! Session policies from simple rules: which buckets (name patterns with `*`),
//! which key prefixes, which of read / write / delete / list. Pure functions, no
//! I/O: the sidecar turns a profile's rules into the IAM policy JSON it sends with
//! `AssumeRole`/`AssumeRoleWithWebIdentity`, and checks presign requests against the
//! same rules.
//!
//! | action | IAM actions | resource |
//! |---|---|---|
//! | `read` | `s3:GetObject`, `s3:GetObjectVersion` | `arn:aws:s3:::BUCKET/PREFIX*` |
//! | `write` | `s3:PutObject`, `s3:AbortMultipartUpload`, `s3:ListMultipartUploadParts` | same |
//! | `delete` | `s3:DeleteObject`, `s3:DeleteObjectVersion` | same |
//! | `list` | `s3:ListBucket` (+ `s3:GetBucketLocation`) | `arn:aws:s3:::BUCKET`, with `"StringLike": {"s3:prefix": ["PREFIX*"]}` when prefixes are given |
//!
//! A session policy can only narrow what the role allows: the effective permissions
//! are the intersection of the role's policies and the session policy.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde_json::{json, Value};

/// STS refuses plaintext session policies longer than this.
pub const MAX_POLICY_CHARS: usize = 2048;

/// One of the four things a rule can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum S3Action {
    /// `s3:GetObject`, `s3:GetObjectVersion`.
    Read,
    /// `s3:PutObject` and multipart uploads.
    Write,
    /// `s3:DeleteObject`, `s3:DeleteObjectVersion`.
    Delete,
    /// `s3:ListBucket` (and `s3:GetBucketLocation`).
    List,
}

impl S3Action {
    /// Every action, what `all` means in a rule.
    pub const ALL: [S3Action; 4] = [Self::Read, Self::Write, Self::Delete, Self::List];

    /// The name used in config files (`read`, `write`, `delete`, `list`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
            Self::List => "list",
        }
    }

    fn object_actions(self) -> &'static [&'static str] {
        match self {
            Self::Read => &["s3:GetObject", "s3:GetObjectVersion"],
            Self::Write => &[
                "s3:PutObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            Self::Delete => &["s3:DeleteObject", "s3:DeleteObjectVersion"],
            Self::List => &[],
        }
    }
}

impl fmt::Display for S3Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for S3Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "delete" => Ok(Self::Delete),
            "list" => Ok(Self::List),
            other => Err(format!(
                "{other:?} is not an action; expected read, write, delete, list or all"
            )),
        }
    }
}

/// Parses a rule's `actions`: `read`, `write`, `delete`, `list`, or `all` (every one).
pub fn parse_actions(names: &[String]) -> Result<BTreeSet<S3Action>, String> {
    let mut set = BTreeSet::new();
    for name in names {
        if name.trim().eq_ignore_ascii_case("all") {
            set.extend(S3Action::ALL);
        } else {
            set.insert(name.parse()?);
        }
    }
    if set.is_empty() {
        return Err("at least one action is required (read, write, delete, list or all)".into());
    }
    Ok(set)
}

/// One rule: `actions` on objects under `prefixes` (empty: the whole bucket) of the
/// buckets matching `buckets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// Bucket name patterns; `*` matches any run of characters.
    pub buckets: Vec<String>,
    /// Key prefixes; empty: the whole bucket.
    pub prefixes: Vec<String>,
    /// What the rule allows on those buckets and prefixes.
    pub actions: BTreeSet<S3Action>,
}

impl PolicyRule {
    /// Checks the patterns and prefixes (see [`validate_bucket_pattern`] and
    /// [`validate_prefix`]).
    pub fn validate(&self) -> Result<(), String> {
        if self.buckets.is_empty() {
            return Err("buckets: at least one bucket name or pattern is required".into());
        }
        for b in &self.buckets {
            validate_bucket_pattern(b).map_err(|e| format!("buckets: {e}"))?;
        }
        for p in &self.prefixes {
            validate_prefix(p).map_err(|e| format!("prefixes: {e}"))?;
        }
        if self.actions.is_empty() {
            return Err("actions: at least one action is required".into());
        }
        Ok(())
    }

    /// Whether this rule allows `action` on `key` in `bucket` (`key` is `None` for
    /// a bucket-level check).
    pub fn allows(&self, action: S3Action, bucket: &str, key: Option<&str>) -> bool {
        self.actions.contains(&action)
            && self.buckets.iter().any(|p| wildcard_match(p, bucket))
            && match key {
                None => true,
                Some(k) => {
                    self.prefixes.is_empty()
                        || self.prefixes.iter().any(|p| k.starts_with(p.as_str()))
                }
            }
    }
}

/// Whether any of `rules` allows the access. No rules means no session policy: the
/// role's own permissions decide, so everything is allowed here.
pub fn allowed(rules: &[PolicyRule], action: S3Action, bucket: &str, key: Option<&str>) -> bool {
    rules.is_empty() || rules.iter().any(|r| r.allows(action, bucket, key))
}

/// `*` matches any run of characters (including none); everything else literally.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            // Indices stay below the lengths, so `+ 1` cannot overflow; saturating
            // says so to the linter.
            star = Some((pi, ti));
            pi = pi.saturating_add(1);
        } else if pi < p.len() && p[pi] == t[ti] {
            pi = pi.saturating_add(1);
            ti = ti.saturating_add(1);
        } else if let Some((sp, st)) = star {
            pi = sp.saturating_add(1);
            ti = st.saturating_add(1);
            star = Some((sp, ti));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A bucket name pattern: S3 bucket-name characters (`a-z`, `0-9`, `.`, `-`) and
/// `*`, at most 63 characters.
pub fn validate_bucket_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > 63 {
        return Err(format!(
            "{pattern:?}: a bucket pattern has 1 to 63 characters"
        ));
    }
    if let Some(c) = pattern
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '*')))
    {
        return Err(format!(
            "{pattern:?}: {c:?} cannot appear in a bucket name (a-z, 0-9, '.', '-', and '*' as a wildcard)"
        ));
    }
    Ok(())
}

/// A key prefix: no IAM wildcards (`*`, `?`), no control characters, at most 1024
/// bytes. A prefix is literal; `reports/` covers `reports/2024/x.csv`.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("an empty prefix; leave prefixes out to allow the whole bucket".into());
    }
    if prefix.len() > 1024 {
        return Err(format!("{prefix:?} is longer than 1024 bytes"));
    }
    if prefix.contains(['*', '?', '$']) {
        return Err(format!(
            "{prefix:?}: '*', '?' and '$' are not allowed in a prefix (prefixes are literal)"
        ));
    }
    if prefix.chars().any(char::is_control) {
        return Err(format!("{prefix:?} contains a control character"));
    }
    Ok(())
}

/// A valid S3 bucket name (the rules for new buckets): 3 to 63 characters of
/// `a-z0-9.-`, starting and ending with a letter or digit, no `..`, not an IPv4
/// address.
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    let ends_ok = name
        .chars()
        .next()
        .zip(name.chars().last())
        .is_some_and(|(a, b)| a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric());
    if !(3..=63).contains(&name.len()) || !ok_chars || !ends_ok || name.contains("..") {
        return Err(format!(
            "{:?} is not a valid bucket name (3-63 characters of a-z, 0-9, '.', '-', starting and ending with a letter or digit)",
            crate::util::snippet(name, 80)
        ));
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!(
            "{name:?} is not a valid bucket name (an IP address)"
        ));
    }
    Ok(())
}

/// A valid object key for presigning: 1 to 1024 bytes, no control characters,
/// and no `.`/`..` path segments (HTTP clients rewrite those, so the signed path
/// would not be the path sent).
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 1024 {
        return Err("the object key must have 1 to 1024 bytes".into());
    }
    if key.chars().any(char::is_control) {
        return Err("the object key contains a control character".into());
    }
    if key.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("the object key has a '.' or '..' path segment".into());
    }
    Ok(())
}

/// The session policy for `rules` (partition `aws`, `aws-cn`, ...), as compact
/// JSON. `None` when there are no rules.
pub fn session_policy(rules: &[PolicyRule], partition: &str) -> Option<String> {
    if rules.is_empty() {
        return None;
    }
    let mut statements = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let object_actions: Vec<&str> = rule
            .actions
            .iter()
            .flat_map(|a| a.object_actions().iter().copied())
            .collect();
        if !object_actions.is_empty() {
            let resources: Vec<String> = rule
                .buckets
                .iter()
                .flat_map(|b| {
                    let prefixes: Vec<&str> = if rule.prefixes.is_empty() {
                        vec![""]
                    } else {
                        rule.prefixes.iter().map(String::as_str).collect()
                    };
                    prefixes
                        .into_iter()
                        .map(move |p| format!("arn:{partition}:s3:::{b}/{p}*"))
                })
                .collect();
            statements.push(json!({
                "Sid": format!("Objects{i}"),
                "Effect": "Allow",
                "Action": object_actions,
                "Resource": resources,
            }));
        }
        if rule.actions.contains(&S3Action::List) {
            let resources: Vec<String> = rule
                .buckets
                .iter()
                .map(|b| format!("arn:{partition}:s3:::{b}"))
                .collect();
            let mut statement = json!({
                "Sid": format!("List{i}"),
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": resources,
            });
            if !rule.prefixes.is_empty() {
                let prefixes: Vec<String> = rule.prefixes.iter().map(|p| format!("{p}*")).collect();
                statement["Condition"] = json!({"StringLike": {"s3:prefix": prefixes}});
            }
            statements.push(statement);
        }
    }
    let doc: Value = json!({"Version": "2012-10-17", "Statement": statements});
    Some(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(buckets: &[&str], prefixes: &[&str], actions: &[&str]) -> PolicyRule {
        PolicyRule {
            buckets: buckets.iter().map(|s| s.to_string()).collect(),
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            actions: parse_actions(&actions.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap(),
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*-analytics-*", "acme-analytics-eu"));
        assert!(wildcard_match("*-analytics-*", "-analytics-"));
        assert!(!wildcard_match("*-analytics-*", "acme-analytics"));
        assert!(wildcard_match("logs", "logs"));
        assert!(!wildcard_match("logs", "logs2"));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(wildcard_match("a**", "a"));
    }

    #[test]
    fn read_only_analytics_tier() {
        let rules = [rule(&["*-analytics-*"], &[], &["read", "list"])];
        let doc: Value = serde_json::from_str(&session_policy(&rules, "aws").unwrap()).unwrap();
        assert_eq!(
            doc,
            json!({
                "Version": "2012-10-17",
                "Statement": [
                    {"Sid": "Objects0", "Effect": "Allow",
                     "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                     "Resource": ["arn:aws:s3:::*-analytics-*/*"]},
                    {"Sid": "List0", "Effect": "Allow",
                     "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                     "Resource": ["arn:aws:s3:::*-analytics-*"]}
                ]
            })
        );
        assert!(allowed(
            &rules,
            S3Action::Read,
            "acme-analytics-eu",
            Some("x")
        ));
        assert!(!allowed(
            &rules,
            S3Action::Write,
            "acme-analytics-eu",
            Some("x")
        ));
        assert!(!allowed(&rules, S3Action::Read, "acme-billing", Some("x")));
    }

    #[test]
    fn prefixes_scope_objects_and_listing() {
        let rules = [rule(&["data", "data-*"], &["reports/", "tmp/"], &["all"])];
        let doc: Value = serde_json::from_str(&session_policy(&rules, "aws-cn").unwrap()).unwrap();
        let objects = &doc["Statement"][0];
        assert_eq!(
            objects["Action"],
            json!([
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:PutObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
                "s3:DeleteObject",
                "s3:DeleteObjectVersion"
            ])
        );
        assert_eq!(
            objects["Resource"],
            json!([
                "arn:aws-cn:s3:::data/reports/*",
                "arn:aws-cn:s3:::data/tmp/*",
                "arn:aws-cn:s3:::data-*/reports/*",
                "arn:aws-cn:s3:::data-*/tmp/*"
            ])
        );
        let list = &doc["Statement"][1];
        assert_eq!(
            list["Condition"],
            json!({"StringLike": {"s3:prefix": ["reports/*", "tmp/*"]}})
        );
        assert!(allowed(
            &rules,
            S3Action::Write,
            "data-1",
            Some("reports/a.csv")
        ));
        assert!(!allowed(
            &rules,
            S3Action::Write,
            "data-1",
            Some("other/a.csv")
        ));
    }

    #[test]
    fn no_rules_no_policy_everything_allowed() {
        assert!(session_policy(&[], "aws").is_none());
        assert!(allowed(&[], S3Action::Delete, "any", Some("k")));
    }

    #[test]
    fn write_only_rule_has_no_list_statement() {
        let rules = [rule(&["inbox"], &[], &["write"])];
        let doc: Value = serde_json::from_str(&session_policy(&rules, "aws").unwrap()).unwrap();
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 1);
        let rules = [rule(&["inbox"], &[], &["list"])];
        let doc: Value = serde_json::from_str(&session_policy(&rules, "aws").unwrap()).unwrap();
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 1);
        assert_eq!(doc["Statement"][0]["Sid"], "List0");
    }

    #[test]
    fn validation() {
        assert!(rule(&["ok-*"], &["a/"], &["read"]).validate().is_ok());
        assert!(rule(&[], &[], &["read"]).validate().is_err());
        assert!(rule(&["Upper"], &[], &["read"]).validate().is_err());
        assert!(rule(&["a/b"], &[], &["read"]).validate().is_err());
        assert!(rule(&["ok"], &["a*"], &["read"]).validate().is_err());
        assert!(rule(&["ok"], &[""], &["read"]).validate().is_err());
        assert!(parse_actions(&["fly".into()]).is_err());
        assert!(parse_actions(&[]).is_err());
        assert_eq!(parse_actions(&["ALL".into()]).unwrap().len(), 4);
    }

    #[test]
    fn bucket_names_and_keys() {
        for ok in ["abc", "my-bucket.eu", "a1b"] {
            assert!(validate_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "-abc",
            "abc-",
            "ABC",
            "a..b",
            "a_b",
            "192.168.1.1",
            "a/b",
            "",
        ] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
        for ok in [
            "a",
            "dir/file.txt",
            "spaces are ok",
            "ünïcode",
            "a//b",
            ".hidden",
        ] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/../b", "./a", "a\nb", "a\u{0}b"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_key(&"k".repeat(1025)).is_err());
    }
}
