"""The CycloneDX SBOM of a built s2iam binary (scripts/sbom runs this):

    python3 sbom.py BINARY OUT.cdx.json METADATA.json Cargo.lock TREE.txt

The crates are the ones BINARY carries in its `cargo auditable` list (read by
audit_info.py), run-time ones only, with the dependency edges the list records, kept to
those TREE.txt names: `cargo tree -p s2iam-cli -e normal` for the features the binary reports
(`s2iam version --json`), which resolves features as the build did. The embedded list
alone over-states: cargo auditable reads `cargo metadata`, which unifies features across
the whole workspace, so the production binary's list names RustCrypto's rsa that only the
mock servers' jsonwebtoken features pull in and the build never compiles. A crate the
tree names but the list does not fails; the list's extra crates are named in the SBOM's
metadata (property `s2iam:not-compiled`). Each component gets its
purl, its licence and description from METADATA.json (`cargo metadata --all-features`:
a package's licence does not depend on features) and its SHA-256 from Cargo.lock. The
binary itself is the top component, with its own SHA-256, so an SBOM names the one
build it describes. Standard library only (the image's build stage has no pip);
scripts/check-release validates the output against the CycloneDX 1.5 schema.
"""
import datetime
import hashlib
import json
import os
import sys
import tomllib
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import audit_info  # noqa: E402


def purl(name, version):
    return f"pkg:cargo/{name}@{version}"


def licence(meta):
    text = (meta or {}).get("license")
    if text:
        # Old manifests write "MIT/Apache-2.0"; SPDX says "MIT OR Apache-2.0".
        return [{"expression": " OR ".join(p.strip() for p in text.split("/"))}]
    if (meta or {}).get("license_file"):
        return [{"license": {"name": f"see {meta['license_file']} in the crate"}}]
    return []


def main():
    binary, out, metadata_path, lock_path, tree_path = sys.argv[1:6]
    audit = audit_info.read(binary)
    packages = audit["packages"]
    metadata = json.load(open(metadata_path))
    meta = {(p["name"], p["version"]): p for p in metadata["packages"]}
    with open(lock_path, "rb") as f:
        checksums = {(p["name"], p["version"]): p.get("checksum")
                     for p in tomllib.load(f)["package"]}

    tree = set()
    for line in open(tree_path):
        name, _, version = line.strip().partition(" v")
        if name and version:
            tree.add((name, version.split(" ")[0]))
    listed = [i for i, p in enumerate(packages) if p.get("kind", "runtime") == "runtime"]
    runtime = [i for i in listed if (packages[i]["name"], packages[i]["version"]) in tree]
    extra = sorted(f"{packages[i]['name']} {packages[i]['version']}" for i in listed if i not in runtime)
    # Proc macros are normal dependencies to cargo tree, build-time ones to the list.
    absent = sorted(tree - {(p["name"], p["version"]) for p in packages})
    if absent:
        sys.exit(f"sbom: the build compiles crates {binary}'s embedded list does not name: {absent[:5]}")
    roots = [i for i in runtime if packages[i].get("root")]
    if len(roots) != 1:
        sys.exit(f"sbom: expected one root package in {binary}'s list, found {len(roots)}")
    root = roots[0]
    unknown = [f"{packages[i]['name']} {packages[i]['version']}" for i in runtime
               if (packages[i]["name"], packages[i]["version"]) not in meta]
    if unknown:
        sys.exit(f"sbom: crates in {binary} that cargo metadata does not know: {unknown[:5]}")

    with open(binary, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    ref = {i: purl(packages[i]["name"], packages[i]["version"]) for i in runtime}

    def component(i, kind):
        p = packages[i]
        m = meta[(p["name"], p["version"])]
        c = {"type": kind, "bom-ref": ref[i], "name": p["name"], "version": p["version"],
             "purl": ref[i], "licenses": licence(m)}
        if m.get("description"):
            c["description"] = " ".join(m["description"].split())
        if checksums.get((p["name"], p["version"])):
            c["hashes"] = [{"alg": "SHA-256", "content": checksums[(p["name"], p["version"])]}]
        refs = [{"type": "vcs", "url": m["repository"]}] if m.get("repository") else []
        if p.get("source") == "crates.io":
            refs.append({"type": "distribution",
                         "url": f"https://crates.io/crates/{p['name']}/{p['version']}"})
        if refs:
            c["externalReferences"] = refs
        return c

    top = component(root, "application")
    top["hashes"] = [{"alg": "SHA-256", "content": digest}]
    top["properties"] = [{"name": "s2iam:binary", "value": os.path.basename(binary)},
                         {"name": "s2iam:not-compiled", "value": ", ".join(extra) or "none"}]
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch
            else datetime.datetime.now(datetime.timezone.utc))
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        # The same binary always gets the same serial number.
        "serialNumber": uuid.uuid5(uuid.NAMESPACE_URL, f"s2iam-sbom:{digest}").urn,
        "version": 1,
        "metadata": {
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "s2iam scripts/sbom",
                                      "description": "from the binary's cargo auditable list"}]},
            "component": top,
        },
        "components": [component(i, "library") for i in sorted(runtime, key=lambda i: ref[i])
                       if i != root],
        "dependencies": [
            {"ref": ref[i],
             "dependsOn": sorted({ref[d] for d in packages[i].get("dependencies", []) if d in ref})}
            for i in sorted(runtime, key=lambda i: ref[i])
        ],
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(bom, f, indent=2)
        f.write("\n")
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    try:
        main()
    except (audit_info.NoList, OSError, KeyError, ValueError) as e:
        sys.exit(f"sbom: {e}")
