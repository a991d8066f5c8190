"""The `version` case of scripts/check-release:

    python3 check_version.py BINARY BUILD_SCRIPT HEAD

BINARY's `--version` is one line and `version --json` has exactly the build facts,
with HEAD as the commit. BUILD_SCRIPT (s2iam-cli's compiled build.rs) is then run as cargo
runs it, on a copy of the crate's manifest (as `cli/` of a workspace) outside any git work tree: the commit must be
"unknown", and with a `.cargo_vcs_info.json` (what `cargo package` writes into a crate
tarball) the commit it names. Prints one line; exits non-zero with the reason.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile


def build_env(script, crate_dir, target):
    """What the build script tells cargo: {NAME: value} of its rustc-env lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGO_FEATURE_")}
    env.pop("S2IAM_COMMIT", None)
    env.update(
        CARGO_MANIFEST_DIR=crate_dir,
        TARGET=target,
        RUSTC="rustc",
        CARGO_FEATURE_DEV="1",
        # git must not find the enclosing repository (the temporary directory's parents).
        GIT_CEILING_DIRECTORIES=os.path.dirname(crate_dir),
    )
    out = subprocess.run([script], cwd=crate_dir, env=env, capture_output=True, text=True, check=True).stdout
    facts = {}
    for line in out.splitlines():
        if line.startswith("cargo:rustc-env="):
            name, _, value = line[len("cargo:rustc-env="):].partition("=")
            facts[name] = value
    return facts


def main():
    binary, script = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    head = sys.argv[3]
    line = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    assert line.count("\n") == 1 and line.startswith("s2iam "), f"--version printed {line!r}"
    raw = subprocess.run([binary, "version", "--json"], capture_output=True, text=True, check=True).stdout
    j = json.loads(raw)
    assert set(j) == {"version", "commit", "features", "target", "rustc"}, f"fields {sorted(j)}"
    assert f"s2iam {j['version']}\n" == line, f"version {j['version']} vs --version {line!r}"
    assert j["commit"] == head, f"commit {j['commit']} != HEAD {head} (a stale build?)"
    # s2iam-cli's own features (the production build has none of them).
    assert set(j["features"]) <= {"dev", "aws-sdk", "aws-config"}, f"features {j['features']}"
    assert j["rustc"].startswith("rustc "), f"rustc {j['rustc']!r}"

    with tempfile.TemporaryDirectory() as tmp:
        crate = os.path.join(tmp, "s2iam-" + j["version"], "cli")
        os.makedirs(crate)
        shutil.copy("cli/Cargo.toml", crate)
        plain = build_env(script, crate, j["target"])
        assert plain.get("S2IAM_BUILD_COMMIT") == "unknown", f"without git: {plain}"
        assert plain.get("S2IAM_BUILD_FEATURES") == "dev", f"features: {plain}"
        sha = "0123456789abcdef0123456789abcdef01234567"
        with open(os.path.join(crate, ".cargo_vcs_info.json"), "w") as f:
            json.dump({"git": {"sha1": sha}, "path_in_vcs": ""}, f)
        packaged = build_env(script, crate, j["target"])
        assert packaged.get("S2IAM_BUILD_COMMIT") == sha[:12], f"from a tarball: {packaged}"
    print(f"--version one line; version --json {raw.strip()}; without git: unknown; "
          "from a crate tarball: the commit it names")


if __name__ == "__main__":
    try:
        main()
    except (AssertionError, subprocess.CalledProcessError, ValueError, KeyError, OSError) as e:
        print(f"{type(e).__name__}: {e}")
        sys.exit(1)
