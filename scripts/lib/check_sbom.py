"""The `sbom` case of scripts/check-release:

    python3 check_sbom.py BINARY SBOM [BINARY SBOM]

Each SBOM (from scripts/sbom) is CycloneDX and lists exactly the crates BINARY carries in
its cargo-auditable list (read with rust-audit-info), each with a purl and a licence; an
SBOM whose file name says "production" lists no rsa. Prints one line; exits non-zero
with the reason.
"""
import json
import subprocess
import sys


def check(binary, path):
    bom = json.load(open(path))
    assert bom.get("bomFormat") == "CycloneDX", f"{path}: not CycloneDX"
    top = bom["metadata"]["component"]
    audit = json.loads(subprocess.run(["rust-audit-info", binary], capture_output=True, check=True).stdout)
    want = {(p["name"], p["version"]) for p in audit["packages"]
            if p.get("kind", "runtime") == "runtime" and p["name"] != top["name"]}
    listed = {(c["name"], c.get("version")) for c in bom["components"]}
    assert listed == want, f"{path}: missing {sorted(want - listed)[:3]}, extra {sorted(listed - want)[:3]}"
    bare = [c["name"] for c in bom["components"] if not c.get("purl") or not c.get("licenses")]
    assert not bare, f"{path}: no purl or licence for {bare[:5]}"
    if "production" in path:
        assert all(n != "rsa" for n, _ in listed), f"{path}: rsa listed"
    return f"{top['name']} {top.get('version')}: {len(listed)} crates"


def main():
    args = sys.argv[1:]
    notes = [check(b, p) for b, p in zip(args[::2], args[1::2])]
    print("CycloneDX 1.5, every crate the binary carries, with purl and licence, nothing else ("
          + "; ".join(notes) + ")")


if __name__ == "__main__":
    try:
        main()
    except (AssertionError, subprocess.CalledProcessError, ValueError, KeyError) as e:
        print(f"{type(e).__name__}: {e}")
        sys.exit(1)
