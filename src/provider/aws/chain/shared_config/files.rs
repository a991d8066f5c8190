//! The AWS shared config and credentials files, read and merged the way the AWS
//! SDKs (botocore, aws-config) do:
//!
//! - the config file is `AWS_CONFIG_FILE`, else `~/.aws/config`; its profiles are
//!   `[default]` and `[profile NAME]` (`[profile default]` wins over `[default]`);
//!   `[sso-session NAME]` sections are kept apart; any other section (`[NAME]`,
//!   `[services ...]`) is not a profile there;
//! - the credentials file is `AWS_SHARED_CREDENTIALS_FILE`, else
//!   `~/.aws/credentials`; every `[NAME]` section is the profile `NAME`;
//! - a profile in both files is merged key by key, the credentials file winning;
//! - `key = value` lines, `#` and `;` comment lines, keys case-insensitive, an
//!   indented line continuing the previous value (sub-properties such as `s3 =`).
//!
//! Missing files are not an error (the SDKs treat them as empty).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::env::ProviderConfig;

/// One profile's keys (lowercased) with their values, after merging.
pub type Section = HashMap<String, String>;

/// Both files, parsed and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileSet {
    /// Profiles by name.
    pub profiles: HashMap<String, Section>,
    /// `[sso-session NAME]` sections of the config file.
    pub sso_sessions: HashMap<String, Section>,
    /// The config file's path (for messages), and whether it exists.
    pub config: FileStatus,
    /// The credentials file's path (for messages), and whether it exists.
    pub credentials: FileStatus,
}

/// A file's path and whether it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStatus {
    /// `None` when no path could be made (no `HOME` and no variable).
    pub path: Option<PathBuf>,
    /// The file exists and was read.
    pub found: bool,
}

impl FileStatus {
    fn shown(&self) -> String {
        self.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "~/.aws/… (HOME is not set)".into())
    }
}

impl ProfileSet {
    /// True when neither file exists.
    pub fn is_empty(&self) -> bool {
        !self.config.found && !self.credentials.found
    }

    /// "/home/u/.aws/config nor /home/u/.aws/credentials", as resolved, for
    /// messages.
    pub fn describe_files(&self) -> String {
        if self.config.path.is_none() && self.credentials.path.is_none() {
            return "~/.aws/config and ~/.aws/credentials (HOME is not set)".into();
        }
        format!("{} and {}", self.config.shown(), self.credentials.shown())
    }
}

/// Why the files could not be read (a missing file is not an error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot read {path}: {reason}")]
pub struct FileError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// Reads and merges both files from the injected environment and filesystem.
pub fn load(cfg: &ProviderConfig) -> Result<ProfileSet, FileError> {
    let home = cfg.env.get("HOME").or_else(|| cfg.env.get("USERPROFILE"));
    let config_path = path(cfg.env.get("AWS_CONFIG_FILE"), home.as_deref(), "config");
    let credentials_path = path(
        cfg.env.get("AWS_SHARED_CREDENTIALS_FILE"),
        home.as_deref(),
        "credentials",
    );
    let config_text = read(cfg, config_path.as_deref())?;
    let credentials_text = read(cfg, credentials_path.as_deref())?;
    let mut set = merge(
        config_text.as_deref().unwrap_or(""),
        credentials_text.as_deref().unwrap_or(""),
    );
    set.config = FileStatus {
        path: config_path,
        found: config_text.is_some(),
    };
    set.credentials = FileStatus {
        path: credentials_path,
        found: credentials_text.is_some(),
    };
    Ok(set)
}

/// The variable's path (a leading `~/` is the home directory), else
/// `~/.aws/{file}`.
fn path(var: Option<String>, home: Option<&str>, file: &str) -> Option<PathBuf> {
    match var {
        Some(p) => match (p.strip_prefix("~/"), home) {
            (Some(rest), Some(h)) => Some(Path::new(h).join(rest)),
            _ => Some(PathBuf::from(p)),
        },
        None => home.map(|h| Path::new(h).join(".aws").join(file)),
    }
}

fn read(cfg: &ProviderConfig, path: Option<&Path>) -> Result<Option<String>, FileError> {
    let Some(path) = path else { return Ok(None) };
    match cfg.fs.read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

/// The merged profiles of a config file's and a credentials file's text.
pub fn merge(config: &str, credentials: &str) -> ProfileSet {
    let mut set = ProfileSet::default();
    // `[profile default]` wins over `[default]`: apply the bare one first.
    let mut config_sections = parse_ini_ordered(config);
    config_sections.sort_by_key(|(name, _)| name.trim() != "default");
    for (header, keys) in config_sections {
        let header = header.trim();
        if header == "default" {
            set.profiles.insert("default".into(), keys);
        } else if let Some(name) = prefixed(header, "profile") {
            set.profiles.insert(name.to_string(), keys);
        } else if let Some(name) = prefixed(header, "sso-session") {
            set.sso_sessions.insert(name.to_string(), keys);
        }
    }
    for (name, keys) in parse_ini_ordered(credentials) {
        set.profiles
            .entry(name.trim().to_string())
            .or_default()
            .extend(keys);
    }
    set
}

/// `profile NAME` → `NAME` (any whitespace between, none inside the name).
fn prefixed<'a>(header: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = header.strip_prefix(prefix)?;
    let name = rest.trim();
    (rest.starts_with(char::is_whitespace)
        && !name.is_empty()
        && !name.contains(char::is_whitespace))
    .then_some(name)
}

/// Sections of an INI file by header; a repeated section merges (later keys win).
pub fn parse_ini(text: &str) -> HashMap<String, Section> {
    let mut out: HashMap<String, Section> = HashMap::new();
    for (name, keys) in parse_ini_ordered(text) {
        out.entry(name).or_default().extend(keys);
    }
    out
}

/// Sections in file order, repeated headers merged into their first place.
fn parse_ini_ordered(text: &str) -> Vec<(String, Section)> {
    let mut sections: Vec<(String, Section)> = Vec::new();
    let mut current: Option<usize> = None;
    let mut last_key: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = section_header(line) {
            let index = match sections.iter().position(|(n, _)| n == header) {
                Some(i) => i,
                None => {
                    sections.push((header.to_string(), Section::new()));
                    sections.len().saturating_sub(1)
                }
            };
            current = Some(index);
            last_key = None;
            continue;
        }
        let Some(section) = current.and_then(|i| sections.get_mut(i)) else {
            continue;
        };
        // An indented line continues the previous key (a sub-property block).
        if raw.starts_with(char::is_whitespace) {
            if let Some(value) = last_key.as_ref().and_then(|k| section.1.get_mut(k)) {
                value.push('\n');
                value.push_str(line);
                continue;
            }
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let key = k.trim().to_ascii_lowercase();
        section.1.insert(key.clone(), v.trim().to_string());
        last_key = Some(key);
    }
    sections
}

/// `[name]`, with an optional trailing comment after the bracket.
fn section_header(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let (name, after) = rest.split_once(']')?;
    let after = after.trim();
    (after.is_empty() || after.starts_with('#') || after.starts_with(';')).then_some(name.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Env, Fs};

    const CONFIG: &str = "\
# comment
[default]
region = us-west-2
[profile dev]
role_arn = arn:aws:iam::123456789012:role/dev
source_profile = base
s3 =
  max_concurrent_requests = 10
region=eu-west-1
[profile   spaced  ]
region = ap-south-1
[base]
region = ignored-in-config
[sso-session corp]
sso_start_url = https://corp.awsapps.com/start
[profile default]
output = json
[services dev-s3]
s3 =
  endpoint_url = http://localhost
";

    const CREDENTIALS: &str = "\
[base]
aws_access_key_id = AKIABASE
aws_secret_access_key = secret
[dev]
Region = us-east-2
";

    #[test]
    fn merges_like_the_sdks() {
        let set = merge(CONFIG, CREDENTIALS);
        let dev = &set.profiles["dev"];
        // The credentials file wins for a key in both.
        assert_eq!(dev["region"], "us-east-2");
        assert_eq!(dev["source_profile"], "base");
        assert_eq!(dev["s3"], "\nmax_concurrent_requests = 10");
        assert!(!dev.contains_key("max_concurrent_requests"));
        // `[base]` in the config file is not a profile; in the credentials file it is.
        assert_eq!(set.profiles["base"].get("region"), None);
        assert_eq!(set.profiles["base"]["aws_access_key_id"], "AKIABASE");
        assert_eq!(set.profiles["spaced"]["region"], "ap-south-1");
        // `[profile default]` replaces `[default]`.
        assert_eq!(set.profiles["default"].get("region"), None);
        assert_eq!(set.profiles["default"]["output"], "json");
        assert_eq!(
            set.sso_sessions["corp"]["sso_start_url"],
            "https://corp.awsapps.com/start"
        );
        assert!(!set.profiles.contains_key("services dev-s3"));
        assert!(!set.profiles.contains_key("dev-s3"));
    }

    #[test]
    fn headers_and_odd_lines() {
        assert_eq!(section_header("[a] # c"), Some("a"));
        assert_eq!(section_header("[a] x"), None);
        assert_eq!(section_header("[ a ]"), Some("a"));
        assert_eq!(prefixed("profile x", "profile"), Some("x"));
        assert_eq!(prefixed("profilex", "profile"), None);
        assert_eq!(prefixed("profile x y", "profile"), None);
        let s = parse_ini("k = v\n[a]\nno equals\n=v\n[a]\nk2 = v2\n");
        assert_eq!(s["a"].len(), 2, "{s:?}");
        assert_eq!(s["a"][""], "v");
    }

    #[test]
    fn loads_from_the_environment_and_home() {
        let fs = Fs::from_files([("/h/.aws/config", CONFIG), ("/etc/aws-creds", CREDENTIALS)]);
        let env = Env::from_pairs([
            ("HOME", "/h"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/etc/aws-creds"),
        ]);
        let set = load(&ProviderConfig::with_env(env, fs.clone())).unwrap();
        assert!(set.config.found && set.credentials.found);
        assert_eq!(set.profiles["base"]["aws_access_key_id"], "AKIABASE");

        let env = Env::from_pairs([("HOME", "/nowhere")]);
        let set = load(&ProviderConfig::with_env(env, fs.clone())).unwrap();
        assert!(set.is_empty());
        assert!(set.describe_files().contains("/nowhere/.aws/credentials"));

        let env = Env::from_pairs([("AWS_CONFIG_FILE", "~/.aws/config"), ("HOME", "/h")]);
        let set = load(&ProviderConfig::with_env(env, fs)).unwrap();
        assert!(set.config.found && !set.credentials.found);
    }
}
