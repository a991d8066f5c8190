"""The checks behind scripts/check-inject (see that script for the list)."""

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import Fail, Skip, check, main, need  # noqa: E402,F401
ROOT = Path(__file__).resolve().parents[2]
S2IAM = ROOT / "target" / "debug" / "s2iam"
WORKLOADS = ROOT / "sidecar" / "tests" / "data" / "kube" / "workloads.yaml"
WEBHOOK_DIR = ROOT / "deploy" / "kubernetes" / "webhook"
OUT = ROOT / "target" / "inject-check"
VENV = ROOT / "target" / "deploy-venv"
K8S_VERSIONS = ["1.29.0", "1.37.0"]
# Objects kubernetes-validate has no schema for (custom resources).
CRD_GROUPS = ("cert-manager.io/",)


def inject(text, *args):
    out = subprocess.run([str(S2IAM), "inject", *args], input=text, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise Fail(f"s2iam inject {' '.join(args)} exited {out.returncode}: {out.stderr.strip()}")
    return out.stdout, out.stderr


def docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


def objects(docs_):
    """Every object, the items of Lists flattened."""
    for d in docs_:
        if d.get("kind", "").endswith("List"):
            yield from d.get("items", [])
        else:
            yield d


STATE = {}


@check("inject-binary")
def inject_binary():
    need(S2IAM.exists(), f"{S2IAM} not built (cargo build)")
    source = WORKLOADS.read_text()
    out, err = inject(source, "-f", "-", "--image", "registry.example.com/s2iam:0.1.0@sha256:" + "ab" * 32)
    need("8 injected" in err, f"summary: {err.strip()}")
    again, err2 = inject(out, "--image", "registry.example.com/s2iam:0.1.0@sha256:" + "ab" * 32)
    need(again == out, "a second pass changed the output")
    need("0 injected, 8 already had s2iam" in err2, f"second summary: {err2.strip()}")
    plain = source[source.index("# Not annotated"):]
    need(out.endswith(plain), "un-annotated documents were not copied byte for byte")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "injected.yaml").write_text(out)
    STATE["injected"] = docs(out)
    STATE["input"] = docs(source)
    bad = subprocess.run([str(S2IAM), "inject"], input="kind: Pod\nmetadata: {annotations: {s2iam.singlestore.com/inject: \"true\", s2iam.singlestore.com/image: \"a b\"}}\nspec: {containers: []}\n",
                         capture_output=True, text=True, timeout=30)
    need(bad.returncode == 1 and "s2iam.singlestore.com/image" in bad.stderr and bad.stdout == "",
         f"a bad annotation: exit {bad.returncode}, stderr {bad.stderr.strip()!r}")
    return f"{len(STATE['injected'])} documents -> target/inject-check/injected.yaml; second pass byte-identical; bad annotation exits 1 naming it"


def validate(objs, label):
    try:
        import kubernetes_validate as kv
    except ImportError:
        raise Skip("kubernetes-validate is not installed (scripts/setup-deploy-tools)")
    count = crd = 0
    for version in K8S_VERSIONS:
        for o in objs:
            if o.get("apiVersion", "").startswith(CRD_GROUPS):
                crd += 1
                continue
            try:
                kv.validate(o, version, strict=True)
            except kv.ValidationError as e:
                raise Fail(f"{label} {o['kind']}/{o['metadata'].get('name')} against {version}: {e.message}")
            count += 1
    return count, crd // len(K8S_VERSIONS)


@check("inject-kubernetes-validate")
def inject_validate():
    need("injected" in STATE, "nothing injected")
    count, _ = validate(list(objects(STATE["injected"])), "injected")
    import kubernetes_validate as kv
    # The validator bites: 1.27 has no native sidecars.
    pod = STATE["injected"][0]
    try:
        kv.validate(pod, "1.27.0", strict=True)
        raise Fail("1.27 accepted the injected Pod (restartPolicy on an init container)")
    except kv.ValidationError:
        pass
    return f"{count} objects valid (strict) against {', '.join(K8S_VERSIONS)}; 1.27 refuses the native sidecar"


def checkov(directory):
    exe = VENV / "bin" / "checkov"
    if not exe.exists():
        raise Skip("checkov is not installed (scripts/setup-deploy-tools)")
    out = subprocess.run([str(exe), "-d", str(directory), "--framework", "kubernetes", "--skip-download", "-o", "json"],
                         capture_output=True, text=True, timeout=300)
    try:
        reports = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise Fail(f"checkov gave no JSON (exit {out.returncode}): {out.stderr[-2000:]}")
    if isinstance(reports, dict):
        reports = [reports]
    problems, summary = [], []
    for r in reports:
        s = r["summary"]
        summary.append(f"{s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped")
        for c in r["results"].get("failed_checks", []):
            problems.append(f"{c['check_id']} {c['check_name']} in {c['file_path']} {c.get('resource', '')}")
        for c in r["results"].get("skipped_checks", []):
            reason = (c.get("check_result", {}).get("suppress_comment") or "").strip()
            if len(reason) < 20:
                problems.append(f"{c['check_id']} skipped without a reason in {c['file_path']}")
        if s.get("parsing_errors"):
            problems.append(f"{s['parsing_errors']} parsing errors")
        if s["passed"] == 0:
            problems.append("checkov passed nothing: did it scan anything?")
    need(reports, "checkov produced no report")
    need(not problems, "; ".join(problems))
    return "; ".join(summary)




# ------------------------------------------------------------ the webhook


def apply_patch(doc, ops):
    """RFC 6902 add / remove / replace, as the API server applies them."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            if kind == "add":
                if last == "-":
                    parent.append(op["value"])
                else:
                    parent.insert(int(last), op["value"])
            elif kind == "replace":
                parent[int(last)] = op["value"]
            elif kind == "remove":
                del parent[int(last)]
            else:
                raise Fail(f"unexpected op {kind}")
        else:
            if kind in ("add", "replace"):
                need(kind == "add" or last in parent, f"replace of a missing {op['path']}")
                parent[last] = op["value"]
            elif kind == "remove":
                del parent[last]
            else:
                raise Fail(f"unexpected op {kind}")
    return doc


def make_certs(d):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                    "-keyout", d / "ca.key", "-out", d / "ca.crt", "-subj", "/CN=s2iam-check-ca"], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", d / "tls.key", "-out", d / "tls.csr", "-subj", "/CN=localhost"], check=True, capture_output=True)
    (d / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    subprocess.run(["openssl", "x509", "-req", "-in", d / "tls.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
                    "-CAcreateserial", "-days", "2", "-out", d / "tls.crt", "-extfile", d / "ext"], check=True, capture_output=True)


def curl(url, ca, *args):
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(ca), "-o", "-", "-w", "\n%{http_code}", *args, url],
                         capture_output=True, text=True, timeout=20)
    need(out.returncode == 0, f"curl {url}: {out.stderr.strip()}")
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


@check("webhook-https-curl")
def webhook_https():
    need("injected" in STATE, "nothing injected")
    if not shutil.which("curl") or not shutil.which("openssl"):
        raise Skip("curl or openssl missing")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_certs(d)
        log = open(d / "log", "w+")
        proc = subprocess.Popen([str(S2IAM), "webhook", "--listen", "127.0.0.1:0", "--tls-cert", str(d / "tls.crt"),
                                 "--tls-key", str(d / "tls.key"), "--image", "registry.example.com/s2iam:0.1.0@sha256:" + "ab" * 32],
                                stdout=log, stderr=log, env={**os.environ, "NO_COLOR": "1"})
        try:
            port = None
            for _ in range(100):
                log.seek(0)
                m = re.search(r"addr=127\.0\.0\.1:(\d+)", log.read())
                if m:
                    port = int(m.group(1))
                    break
                need(proc.poll() is None, "the webhook exited: " + (d / "log").read_text())
                time.sleep(0.1)
            need(port, "the webhook did not say where it listens")
            base = f"https://127.0.0.1:{port}"
            code, body = curl(base + "/healthz", d / "ca.crt")
            need(code == 200 and body.strip() == "ok", f"/healthz: {code} {body}")
            reviews = patched = 0
            for source, expected in zip(STATE["input"], STATE["injected"]):
                for op in ("CREATE", "UPDATE"):
                    for obj, want in ((source, expected), (expected, expected)):
                        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                  "request": {"uid": f"check-{reviews}", "operation": op, "dryRun": op == "UPDATE",
                                              "kind": {"group": "", "version": "v1", "kind": obj["kind"]},
                                              "object": obj, "oldObject": obj if op == "UPDATE" else None}}
                        (d / "review.json").write_text(json.dumps(review))
                        code, body = curl(base + "/mutate", d / "ca.crt", "-X", "POST", "-H", "Content-Type: application/json",
                                          "--data-binary", f"@{d / 'review.json'}")
                        need(code == 200, f"/mutate {op} {obj['kind']}: HTTP {code} {body[:200]}")
                        resp = json.loads(body)["response"]
                        need(resp["uid"] == f"check-{reviews}" and resp["allowed"] is True, f"answer {resp}")
                        got = obj
                        if "patch" in resp:
                            need(resp.get("patchType") == "JSONPatch", "patchType")
                            got = apply_patch(obj, json.loads(base64.b64decode(resp["patch"])))
                            patched += 1
                        need(got == want, f"{op} {obj['kind']} {obj.get('metadata', {}).get('name')}: patch result differs from inject's output")
                        reviews += 1
            # Bounds and refusals.
            code, _ = curl(base + "/mutate", d / "ca.crt", "-X", "POST", "--data-binary", "{not json")
            need(code == 400, f"bad JSON: {code}")
            (d / "big").write_bytes(b" " * (3 * 1024 * 1024 + 1))
            code, _ = curl(base + "/mutate", d / "ca.crt", "-X", "POST", "--data-binary", f"@{d / 'big'}")
            need(code == 413, f"a body over 3 MiB: {code}")
            code, _ = curl(base + "/mutate", d / "ca.crt")
            need(code == 405, f"GET /mutate: {code}")
            plain = subprocess.run(["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{port}/healthz"], capture_output=True, text=True)
            need(plain.returncode != 0 or "ok" not in plain.stdout, "plain HTTP answered")
        finally:
            proc.terminate()
            try:
                code = proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise Fail("the webhook did not stop on SIGTERM")
        need(code == 0, f"webhook exit code {code} after SIGTERM")
    return f"{reviews} AdmissionReviews over HTTPS (curl --cacert), {patched} patched, each equal to inject's output; 400/413/405 on bad bodies"


@check("webhook-manifests")
def webhook_manifests():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        raise Skip("kubectl missing (kubectl kustomize renders deploy/)")
    out = subprocess.run([kubectl, "kustomize", str(WEBHOOK_DIR)], capture_output=True, text=True, timeout=60)
    need(out.returncode == 0, f"kubectl kustomize: {out.stderr.strip()}")
    objs = docs(out.stdout)
    kinds = sorted(o["kind"] for o in objs)
    for k in ("Deployment", "PodDisruptionBudget", "Service", "MutatingWebhookConfiguration", "Certificate", "NetworkPolicy"):
        need(k in kinds, f"no {k}")
    dep = next(o for o in objs if o["kind"] == "Deployment")
    need(dep["spec"]["replicas"] == 2, "replicas")
    hook = next(o for o in objs if o["kind"] == "MutatingWebhookConfiguration")["webhooks"][0]
    need(hook["reinvocationPolicy"] == "IfNeeded" and hook["sideEffects"] == "None", "reinvocation / side effects")
    need(hook["failurePolicy"] in ("Fail", "Ignore") and hook["timeoutSeconds"] <= 10, "failurePolicy / timeout")
    need(hook["clientConfig"]["service"]["path"] == "/mutate", "path")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    need(args[0] == "webhook" and "--tls-cert" in args, f"args {args}")
    # The binary accepts the Deployment's arguments (everything but the files).
    help_ = subprocess.run([str(S2IAM), "webhook", "--help"], capture_output=True, text=True, timeout=10)
    for flag in [a for a in args if a.startswith("--")]:
        need(flag in help_.stdout, f"s2iam webhook has no {flag}")
    count, crd = validate(objs, "webhook")
    STATE["webhook"] = out.stdout
    return f"{', '.join(kinds)}; {count} objects valid against {', '.join(K8S_VERSIONS)} ({crd} cert-manager objects have no schema here)"


@check("checkov")
def checkov_both():
    """One checkov run (about 25 s of start-up each) over both sets."""
    if "injected" not in STATE or "webhook" not in STATE:
        # The failure or SKIP of the checks that render them is already counted.
        raise Skip("nothing to scan: the checks that render the manifests did not finish")
    d = OUT / "checkov"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    # Lists flattened: checkov reads the objects, not List wrappers.
    (d / "injected.yaml").write_text(yaml.safe_dump_all(list(objects(STATE["injected"])), sort_keys=True))
    (d / "webhook.yaml").write_text(STATE["webhook"])
    return "injected workloads and deploy/kubernetes/webhook: " + checkov(d)


if __name__ == "__main__":
    sys.exit(main())
