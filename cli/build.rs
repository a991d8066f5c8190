//! Build facts for `s2iam version --json`: the commit, the enabled features, the target
//! and the compiler, as `S2IAM_BUILD_*` environment variables for `env!`.
//!
//! Works without git and outside a clone: the commit comes from git when this crate's
//! directory is `cli/` at the top of s2iam's work tree, else from `.cargo_vcs_info.json` (what
//! `cargo package` writes into a crate tarball), else from `S2IAM_COMMIT` (set by builds
//! that have the commit but not the `.git` directory, like deploy/Dockerfile's), else it
//! is `unknown`. Never fails the build: anything it cannot find is `unknown`.

// A build script's inputs are the environment cargo gives it (CARGO_FEATURE_*, TARGET,
// RUSTC, CARGO_MANIFEST_DIR): the crate's rule against reading the process environment
// (clippy.toml) is for the library, which has an injected one.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=S2IAM_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = git_commit(&dir)
        .or_else(|| packaged_commit(&dir))
        .or_else(given_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=S2IAM_BUILD_COMMIT={commit}");
    println!(
        "cargo:rustc-env=S2IAM_BUILD_FEATURES={}",
        features().join(",")
    );
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=S2IAM_BUILD_TARGET={target}");
    println!("cargo:rustc-env=S2IAM_BUILD_RUSTC={}", rustc_version());
}

/// The crate's enabled features, from the `CARGO_FEATURE_*` variables cargo sets
/// (upper case, `-` as `_`; s2iam's feature names have no `_`, so the mapping back is exact).
fn features() -> Vec<String> {
    let mut names: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(str::to_string))
        .map(|f| f.to_ascii_lowercase().replace('_', "-"))
        .collect();
    names.sort();
    names
}

fn rustc_version() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    run(Command::new(rustc).arg("--version")).unwrap_or_else(|| "unknown".into())
}

/// The commit of the work tree whose top holds this crate as `cli/`, with rerun
/// triggers on the files that move when HEAD does. `None` without git, or when the
/// crate sits inside some other repository (vendored, unpacked in a parent's tree).
fn git_commit(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| run(Command::new("git").arg("-C").arg(dir).args(args));
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != dir.parent()?.canonicalize().ok()? {
        return None;
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])?];
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"])?);
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &head_ref])?);
    }
    for path in watched {
        let path = dir.join(path);
        // A missing file would make cargo rerun this script on every build.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(commit)
}

/// `git.sha1` of `.cargo_vcs_info.json`, shortened like the git path's.
fn packaged_commit(dir: &Path) -> Option<String> {
    let path = dir.join(".cargo_vcs_info.json");
    if !path.exists() {
        return None;
    }
    println!("cargo:rerun-if-changed={}", path.display());
    let text = std::fs::read_to_string(path).ok()?;
    // {"git": {"sha1": "<40 hex>"}, "path_in_vcs": ""}: found by its key, no JSON
    // parser in build-dependencies for one field.
    let rest = &text[text.find("\"sha1\"")?..];
    let start = rest.find(':')?;
    let sha: String = rest
        .get(start..)?
        .chars()
        .skip_while(|c| !c.is_ascii_hexdigit())
        .take_while(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    (sha.len() == 12).then_some(sha)
}

/// `S2IAM_COMMIT`, when it looks like a commit (hex, 7 to 40 digits), cut to 12.
fn given_commit() -> Option<String> {
    let given = std::env::var("S2IAM_COMMIT").ok()?;
    let ok = (7..=40).contains(&given.len()) && given.chars().all(|c| c.is_ascii_hexdigit());
    ok.then(|| given.chars().take(12).collect())
}

fn run(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}
