"""A tiny kustomize: exactly the features deploy/kubernetes uses, for machines
without `kubectl kustomize`. scripts/check-deploy renders with kubectl when it is
there and then checks that this renderer gives the same objects, so the two
cannot drift apart unnoticed.

Supported kustomization fields: resources (files, or directories holding a
kustomization.yaml), namespace, labels (pairs only, no selectors or templates),
images (name, newName, newTag, digest) and patches (path to a strategic-merge
patch). Anything else is an error, never silently ignored.

    python3 scripts/deploy/render.py deploy/kubernetes/overlays/eks
"""

import copy
import sys
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
# Lists that strategic merge merges item by item, keyed by this field.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}


class RenderError(Exception):
    pass


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def render(directory):
    """The objects kustomize would build from `directory`, in kustomize's order."""
    directory = Path(directory)
    kfile = directory / "kustomization.yaml"
    if not kfile.exists():
        raise RenderError(f"{directory}: no kustomization.yaml")
    k = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(k) - SUPPORTED
    if unknown:
        raise RenderError(f"{kfile}: unsupported fields {sorted(unknown)}")
    objects = []
    for r in k.get("resources", []):
        p = directory / r
        objects.extend(render(p) if p.is_dir() else load_docs(p))
    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise RenderError(f"{kfile}: only 'path' patches are supported: {patch}")
        for doc in load_docs(directory / patch["path"]):
            target = find(objects, doc)
            strategic_merge(target, doc)
    for img in k.get("images", []):
        set_image(objects, img)
    for entry in k.get("labels", []):
        if set(entry) - {"pairs"}:
            raise RenderError(f"{kfile}: only label pairs are supported: {entry}")
        for o in objects:
            o.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    ns = k.get("namespace")
    if ns:
        for o in objects:
            if o.get("kind") not in CLUSTER_SCOPED:
                o.setdefault("metadata", {})["namespace"] = ns
    return objects


def find(objects, patch):
    key = (patch.get("apiVersion"), patch.get("kind"), patch["metadata"]["name"])
    for o in objects:
        if (o.get("apiVersion"), o.get("kind"), o["metadata"]["name"]) == key:
            return o
    raise RenderError(f"patch target not found: {key}")


def strategic_merge(target, patch):
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            strategic_merge(target[key], value)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(target.get(key), list):
            mk = MERGE_KEYS[key]
            for item in value:
                same = [t for t in target[key] if t.get(mk) == item.get(mk)]
                if same:
                    strategic_merge(same[0], item)
                else:
                    target[key].append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def set_image(objects, img):
    def fix(containers):
        for c in containers or []:
            image = c.get("image", "")
            name, tag = image, None
            if "@" in name:
                name = name.split("@", 1)[0]
            elif ":" in name.rsplit("/", 1)[-1]:
                name, tag = name.rsplit(":", 1)
            if name != img["name"]:
                continue
            new = img.get("newName", name)
            if img.get("digest"):
                c["image"] = f"{new}@{img['digest']}"
            elif img.get("newTag") or tag:
                c["image"] = f"{new}:{img.get('newTag', tag)}"
            else:
                c["image"] = new

    for o in objects:
        spec = o.get("spec", {}).get("template", {}).get("spec", {})
        fix(spec.get("containers"))
        fix(spec.get("initContainers"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: render.py KUSTOMIZATION_DIR")
    yaml.safe_dump_all(render(sys.argv[1]), sys.stdout, sort_keys=True)
