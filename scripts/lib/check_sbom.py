"""The `sbom` case of scripts/check-release (run with the Python of target/release-venv,
where scripts/setup-release-tools installs cyclonedx-python-lib):

    python check_sbom.py BINARY SBOM [BINARY SBOM]

Each SBOM (from scripts/sbom) is valid CycloneDX 1.5 by the CycloneDX project's own
schema validator (cyclonedx-python-lib, strict JSON schema), names BINARY by its SHA-256,
and lists the crates BINARY carries in its cargo-auditable list, each with a purl and a
licence, and a dependency entry for each: all of them but the ones its `s2iam:not-compiled`
property names (the list's over-statement, see scripts/lib/sbom.py). An SBOM whose file name says
"production" lists no rsa. Prints one line; exits non-zero with the reason.
"""
import hashlib
import json
import os
import sys

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import audit_info  # noqa: E402


def check(binary, path):
    text = open(path).read()
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    assert error is None, f"{path}: not valid CycloneDX 1.5: {str(error)[:300]}"
    bom = json.loads(text)
    top = bom["metadata"]["component"]
    digest = hashlib.sha256(open(binary, "rb").read()).hexdigest()
    assert {"alg": "SHA-256", "content": digest} in top.get("hashes", []), \
        f"{path}: does not name {binary} by its SHA-256"
    audit = audit_info.read(binary)
    want = {(p["name"], p["version"]) for p in audit["packages"]
            if p.get("kind", "runtime") == "runtime" and not p.get("root")}
    props = {p["name"]: p["value"] for p in top.get("properties", [])}
    dropped = {tuple(x.split(" ")) for x in props["s2iam:not-compiled"].split(", ") if x != "none"}
    listed = {(c["name"], c.get("version")) for c in bom["components"]}
    assert not listed & dropped, f"{path}: lists crates it says are not compiled"
    assert listed | dropped == want, \
        f"{path}: missing {sorted(want - listed - dropped)[:3]}, extra {sorted(listed | dropped - want)[:3]}"
    bare = [c["name"] for c in bom["components"] if not c.get("purl") or not c.get("licenses")]
    assert not bare, f"{path}: no purl or licence for {bare[:5]}"
    refs = {c["bom-ref"] for c in bom["components"]} | {top["bom-ref"]}
    assert {d["ref"] for d in bom["dependencies"]} == refs, f"{path}: dependency entries differ from components"
    edges = sum(len(d["dependsOn"]) for d in bom["dependencies"])
    if "production" in os.path.basename(path):
        assert all(n != "rsa" for n, _ in listed), f"{path}: rsa listed"
    return (f"{os.path.basename(path)}: {len(listed)} crates, {edges} edges; {len(dropped)} more in the "
            "embedded list are not compiled (workspace feature unification)")


def main():
    args = sys.argv[1:]
    notes = [check(b, p) for b, p in zip(args[::2], args[1::2])]
    print("valid CycloneDX 1.5 (cyclonedx-python-lib's schema), the binary's SHA-256, every crate "
          "it carries with purl and licence, nothing else (" + "; ".join(notes) + ")")


if __name__ == "__main__":
    try:
        main()
    except (AssertionError, audit_info.NoList, ValueError, KeyError, OSError) as e:
        print(f"{type(e).__name__}: {e}")
        sys.exit(1)
