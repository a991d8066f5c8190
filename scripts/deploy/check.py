"""The checks behind scripts/check-deploy: deploy/ is run and linted, not just written.

1. The Dockerfile is linted (multi-stage, pinned base tags, numeric non-root USER,
   no HEALTHCHECK, exec-form ENTRYPOINT, version label = Cargo.toml version).
2. Every Kubernetes overlay is rendered offline (`kubectl kustomize`; this
   directory's render.py must agree with it), validated against the Kubernetes
   schemas (kubernetes-validate, strict, 1.29 = the first release with native
   sidecars on by default, and the newest bundled), and linted by checkov together
   with the Dockerfile (zero failures; every skip carries its reason).
3. The rendered manifests are checked for the things that make the design work:
   native sidecar, exec probes on the socket the config names, shared in-memory
   volume, hardened security contexts, group access to socket and token file.
4. The base pod is *run*: the sidecar container's args, env and ConfigMap config,
   exactly as rendered, start the real binary (target/debug/s2iam) inside the
   isolated network namespace against the mock cloud on 169.254.169.254; the
   kubelet is played by this script (startupProbe before the app, the probes'
   exec commands, the containers' uids and fsGroup); the example app's own shell
   command then gets a token over the socket and from the file sink.
5. The systemd unit is verified (systemd-analyze verify and security) and its
   ExecStart/ExecStartPost are run the same way with deploy/systemd/config.toml.

What the run changes, and only that: the volumes' mount paths are replaced by
temporary directories (one regex pass over commands, env values and config text);
the image's /usr/local/bin/s2iam is a copy of target/debug/s2iam; the auth server
URL comes from S2IAM_JWT_SERVER_URL + S2IAM_ALLOW_HTTP=1 (the mock auth service on
loopback); PATH is the host's. Nothing else is overridden: detection finds the mock
GCE metadata server on its real name and address.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import render as mini_kustomize  # noqa: E402
from runner import Fail, Skip, check, main, need  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
KUBE = DEPLOY / "kubernetes"
OVERLAYS = {
    "base": KUBE / "base",
    "eks": KUBE / "overlays" / "eks",
    "gke": KUBE / "overlays" / "gke",
    "aks": KUBE / "overlays" / "aks",
    # The base's pod plus a [[template]]: checked like the overlays.
    "template-sidecar": KUBE / "examples" / "template-sidecar",
}
# The other ways an application takes a token (README, "Getting tokens into your
# application"): their own checks below (render, design, validation, a run).
APP_EXAMPLES = {
    "cronjob-once": KUBE / "examples" / "cronjob-once",
    "run-entrypoint": KUBE / "examples" / "run-entrypoint",
}
UNIT = DEPLOY / "systemd" / "s2iam.service"
APP_UNIT = DEPLOY / "systemd" / "example-report.service"
APP_UNIT_CONFIG = DEPLOY / "systemd" / "example-report.toml"
UNIT_CONFIG = DEPLOY / "systemd" / "config.toml"
VENV = ROOT / "target" / "deploy-venv"
S2IAM = ROOT / "target" / "debug" / "s2iam"
TESTSERVER = ROOT / "target" / "debug" / "s2iam-testserver"
K8S_VERSIONS = ["1.29.0", "1.37.0"]
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions(path=DOCKERFILE):
    """[(INSTRUCTION, arguments)] with continuations joined and comments dropped."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def cargo_version():
    with open(ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["package"]["version"]


def image_facts():
    """What the runtime image defines: entrypoint, cmd, user, binary path."""
    ins = dockerfile_instructions()
    stages = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    final = ins[stages[-1]:]
    facts = {"entrypoint": None, "cmd": None, "user": None, "copies": []}
    for w, rest in final:
        if w == "ENTRYPOINT":
            facts["entrypoint"] = json.loads(rest)
        elif w == "CMD":
            facts["cmd"] = json.loads(rest)
        elif w == "USER":
            facts["user"] = rest
        elif w == "COPY":
            facts["copies"].append(rest.split())
    return facts


@check("dockerfile-lint")
def dockerfile_lint():
    ins = dockerfile_instructions()
    words = [w for w, _ in ins]
    froms = [rest for w, rest in ins if w == "FROM"]
    need(len(froms) >= 2, "not multi-stage")
    need(" AS " in froms[0].upper(), "the build stage has no name")
    for f in froms:
        image = f.split()[0]
        need("$" not in image, f"base image from a variable cannot be checked: {image}")
        last = image.rsplit("/", 1)[-1]
        need(":" in last or "@sha256:" in image, f"base image {image} has no tag")
        need(not re.search(r":latest(@|$)", image), f"base image {image} uses :latest")
    runtime = froms[-1].split()[0]
    need("distroless" in runtime or runtime == "scratch", f"runtime base {runtime} is not distroless/scratch (no shell)")
    need("HEALTHCHECK" not in words, "HEALTHCHECK present (Kubernetes ignores it; probes are exec)")
    need("ADD" not in words, "ADD used; use COPY")
    final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM"):]
    users = [r for w, r in final if w == "USER"]
    need(users, "the final stage sets no USER")
    uid = users[-1].split(":")[0]
    need(uid.isdigit() and int(uid) != 0, f"USER {users[-1]} is not a numeric non-root uid (runAsNonRoot needs numeric)")
    need(any(w == "COPY" and "--from=" in r for w, r in final), "the final stage copies nothing from the build stage")
    facts = image_facts()
    need(isinstance(facts["entrypoint"], list), "ENTRYPOINT is not exec form")
    need(facts["cmd"] and facts["cmd"][0] == "serve", "CMD does not run serve")
    version = cargo_version()
    args = [r for w, r in ins if w == "ARG" and r.startswith("VERSION")]
    need(args and all(a == f"VERSION={version}" for a in args), f"ARG VERSION defaults {args} != Cargo.toml {version}")
    text = DOCKERFILE.read_text()
    need('org.opencontainers.image.version="${VERSION}"' in text, "no version label")
    need('--version)" = "s2iam ${VERSION}"' in text, "the build does not check the binary's version")
    need("--locked" in text, "cargo build without --locked")
    return f"{len(froms)} stages, runtime {runtime}, USER {users[-1]}, version {version}"


# ---------------------------------------------------------------- rendering

RENDERED = {}


def rendered(name):
    if name not in RENDERED:
        raise Fail(f"overlay {name} was not rendered")
    return RENDERED[name]


def kustomize(directory):
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise Fail(f"kubectl kustomize {directory}: {out.stderr.strip()}")
        return [d for d in yaml.safe_load_all(out.stdout) if d], out.stdout, "kubectl kustomize"
    objs = mini_kustomize.render(directory)
    return objs, yaml.safe_dump_all(objs, sort_keys=True), "scripts/deploy/render.py (no kubectl)"


@check("render-overlays")
def render_overlays():
    out = ROOT / "target" / "deploy-rendered"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tool = ""
    for name, d in OVERLAYS.items():
        objs, text, tool = kustomize(d)
        (out / f"{name}.yaml").write_text(text)
        RENDERED[name] = objs
    kinds = sorted({o["kind"] for o in RENDERED["base"]})
    return f"{', '.join(OVERLAYS)} with {tool} -> target/deploy-rendered/ ({', '.join(kinds)})"


@check("render-fallback-agrees")
def render_fallback_agrees():
    if not shutil.which("kubectl"):
        raise Skip("no kubectl here; render.py rendered the overlays")

    def key(o):
        return (o["kind"], o["metadata"]["name"])

    for name, d in OVERLAYS.items():
        mine = {key(o): o for o in mini_kustomize.render(d)}
        theirs = {key(o): o for o in rendered(name)}
        need(mine.keys() == theirs.keys(), f"{name}: objects differ: {sorted(mine)} vs {sorted(theirs)}")
        for k in mine:
            need(mine[k] == theirs[k], f"{name}: {k} differs from kubectl kustomize")
    return "render.py == kubectl kustomize for every overlay"


# ---------------------------------------------------------------- application-mode examples


def pod_spec(o):
    """The pod template's spec of a Deployment, Job or CronJob."""
    if o["kind"] == "CronJob":
        return o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return o["spec"]["template"]["spec"]


def workload(objs):
    found = [o for o in objs if o["kind"] in ("Deployment", "CronJob", "Job")]
    need(len(found) == 1, f"expected one workload, found {[o['kind'] for o in found]}")
    return found[0]


def config_of(objs, pod, container):
    """The TOML config a container's --config names, from the ConfigMap mounted there."""
    argv = container.get("command", []) + container.get("args", [])
    need("--config" in argv, f"{container['name']}: no --config")
    path = argv[argv.index("--config") + 1]
    cdir, cfile = os.path.split(path)
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    need(cdir in mounts, f"{container['name']}: nothing mounted at {cdir}")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    cm = obj(objs, "ConfigMap", volumes[mounts[cdir]]["configMap"]["name"])
    return cm["data"][cfile]


def container_hardened(name, c):
    s = c.get("securityContext", {})
    cn = f"{name}/{c['name']}"
    need(s.get("runAsNonRoot") is True, f"{cn}: runAsNonRoot")
    need(s.get("readOnlyRootFilesystem") is True, f"{cn}: readOnlyRootFilesystem")
    need(s.get("allowPrivilegeEscalation") is False, f"{cn}: allowPrivilegeEscalation")
    need(s.get("capabilities", {}).get("drop") == ["ALL"], f"{cn}: capabilities drop ALL")
    need(s.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{cn}: seccomp")
    need(s.get("runAsUser", 0) >= 10000, f"{cn}: runAsUser below 10000")
    for part in ("requests", "limits"):
        need(c.get("resources", {}).get(part, {}).get("memory"), f"{cn}: resources.{part}")


@check("render-app-examples")
def render_app_examples():
    out = ROOT / "target" / "deploy-rendered"
    need(out.is_dir(), "render-overlays did not run")
    for name, d in APP_EXAMPLES.items():
        objs, text, _ = kustomize(d)
        (out / f"{name}.yaml").write_text(text)
        RENDERED[name] = objs
        if shutil.which("kubectl"):
            mine = sorted(yaml.safe_dump(o, sort_keys=True) for o in mini_kustomize.render(d))
            need(mine == sorted(yaml.safe_dump(o, sort_keys=True) for o in objs), f"{name}: render.py differs from kubectl kustomize")
    return ", ".join(f"{n} ({', '.join(sorted(o['kind'] for o in RENDERED[n]))})" for n in APP_EXAMPLES)


@check("manifests-app-examples")
def manifests_app_examples():
    binary = image_facts()["entrypoint"][0]
    # Native sidecar + template: the template lands on the shared volume, which the
    # app mounts read-only and reads.
    _, pod, sc, app, _, _, config, _ = pod_facts(rendered("template-sidecar"))
    sdir = os.path.dirname(config["listen"]["socket"])
    templates = config.get("template", [])
    need(templates, "template-sidecar: no [[template]] in the config")
    for t in templates:
        need(t["destination"].startswith(sdir + "/"), f"template-sidecar: {t['destination']} is not on the shared volume")
        need(int(t.get("mode", "0640"), 8) & 0o040, "template-sidecar: the rendered file is not group-readable")
        need(t["destination"] in " ".join(app.get("args", []) + app.get("command", [])), "template-sidecar: the app does not read the rendered file")
    # CronJob: a plain init container runs --once into an in-memory emptyDir the
    # job's container mounts read-only; the pod's fsGroup gives it the file.
    objs = rendered("cronjob-once")
    cj = workload(objs)
    need(cj["kind"] == "CronJob", "cronjob-once: no CronJob")
    pod = pod_spec(cj)
    need(pod.get("restartPolicy") in ("Never", "OnFailure"), "cronjob-once: restartPolicy")
    inits = pod.get("initContainers", [])
    need(len(inits) == 1 and "restartPolicy" not in inits[0], "cronjob-once: one plain init container expected (not a sidecar)")
    init = inits[0]
    need(init.get("args", [])[:2] == ["serve", "--once"] and "command" not in init, f"cronjob-once: init args {init.get('args')}")
    text = config_of(objs, pod, init)
    cfg = tomllib.loads(text)
    volumes = {v["name"]: v for v in pod["volumes"]}
    init_mounts = {m["mountPath"]: m for m in init["volumeMounts"]}
    job = pod["containers"][0]
    job_mounts = {m["mountPath"]: m for m in job["volumeMounts"]}
    for t in cfg.get("template", []):
        d = os.path.dirname(t["destination"])
        need(d in init_mounts and d in job_mounts, f"cronjob-once: {d} not mounted in both containers")
        need(volumes[init_mounts[d]["name"]].get("emptyDir", {}).get("medium") == "Memory", "cronjob-once: not an in-memory emptyDir")
        need(job_mounts[d].get("readOnly") is True, "cronjob-once: the job's container mounts the tokens writable")
        need(any(t["destination"] in a for a in job.get("command", []) + job.get("args", [])), "cronjob-once: the job does not read the rendered file")
    need(pod.get("securityContext", {}).get("fsGroup") is not None, "cronjob-once: no fsGroup")
    need(pod.get("automountServiceAccountToken") is False, "cronjob-once: the API token is mounted")
    for c in inits + pod["containers"]:
        container_hardened("cronjob-once", c)
    # s2iam run as the entrypoint: the image's binary, then `run ... -- app`.
    objs = rendered("run-entrypoint")
    dep = workload(objs)
    pod = pod_spec(dep)
    app = pod["containers"][0]
    cmd = app.get("command", [])
    need(cmd[:2] == [binary, "run"] and "--" in cmd and cmd.index("--") < len(cmd) - 1, f"run-entrypoint: command {cmd}")
    grace = cmd[cmd.index("--grace") + 1] if "--grace" in cmd else "10s"
    need(pod.get("terminationGracePeriodSeconds", 30) > int(grace.rstrip("s")), "run-entrypoint: terminationGracePeriodSeconds <= --grace")
    tomllib.loads(config_of(objs, pod, app))
    need(pod.get("automountServiceAccountToken") is False, "run-entrypoint: the API token is mounted")
    container_hardened("run-entrypoint", app)
    for name in APP_EXAMPLES:
        policy = obj(rendered(name), "NetworkPolicy")
        w = workload(rendered(name))
        tmpl = w["spec"]["jobTemplate"]["spec"]["template"] if w["kind"] == "CronJob" else w["spec"]["template"]
        sel = policy["spec"]["podSelector"]["matchLabels"]
        need(all(tmpl["metadata"]["labels"].get(k) == v for k, v in sel.items()), f"{name}: the NetworkPolicy does not select the pod")
    return ("template-sidecar writes its template to the shared volume the app reads; cronjob-once runs serve --once "
            "in a plain init container into an in-memory emptyDir; run-entrypoint runs the app under s2iam run; all hardened")


@check("kubernetes-validate-app-examples")
def kubernetes_validate_app_examples():
    venv_python_ok()
    import kubernetes_validate as kv

    count = 0
    for version in K8S_VERSIONS:
        for name in APP_EXAMPLES:
            for o in rendered(name):
                try:
                    kv.validate(o, version, strict=True)
                except kv.ValidationError as e:
                    raise Fail(f"{name} {o['kind']}/{o['metadata']['name']} against {version}: {e.message}")
                count += 1
    return f"{count} objects valid (strict) against {', '.join(K8S_VERSIONS)}"


# ---------------------------------------------------------------- manifest facts


def obj(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    need(len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def pod_facts(objs):
    """The pieces of the rendered base that the design hangs on."""
    dep = obj(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    sidecars = [c for c in pod.get("initContainers", []) if c["name"] == "s2iam"]
    need(len(sidecars) == 1, "no initContainers entry named s2iam")
    sidecar = sidecars[0]
    apps = pod["containers"]
    need(len(apps) == 1, "expected one app container")
    args = sidecar.get("args", [])
    need("--config" in args, "the sidecar's args name no --config")
    config_path = args[args.index("--config") + 1]
    mounts = {m["mountPath"]: m for m in sidecar.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    cdir, cfile = os.path.split(config_path)
    need(cdir in mounts, f"no volume mounted at {cdir} (the --config directory)")
    cm_name = volumes[mounts[cdir]["name"]]["configMap"]["name"]
    cm = obj(objs, "ConfigMap", cm_name)
    config_text = cm["data"][cfile]
    config = tomllib.loads(config_text)
    return dep, pod, sidecar, apps[0], config_path, config_text, config, volumes


def probe_argv(probe):
    need(probe and "exec" in probe, f"not an exec probe: {probe}")
    return probe["exec"]["command"]


@check("manifests-native-sidecar-and-probes")
def manifests_sidecar():
    facts = image_facts()
    binary = facts["entrypoint"][0]
    notes = []
    for name in OVERLAYS:
        dep, pod, sc, app, _, _, config, volumes = pod_facts(rendered(name))
        need(sc.get("restartPolicy") == "Always", f"{name}: the sidecar is not a native sidecar (restartPolicy: Always)")
        need("command" not in sc, f"{name}: the sidecar overrides the image ENTRYPOINT")
        need(not sc.get("ports"), f"{name}: the sidecar declares ports; it serves on a Unix socket only")
        socket = config["listen"]["socket"]
        tcp = config["listen"].get("tcp")
        need(tcp is None or tcp.startswith("127.") or tcp.startswith("[::1]"), f"{name}: non-loopback tcp {tcp}")
        expect = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
        for kind, route in expect.items():
            p = sc.get(kind)
            argv = probe_argv(p)
            need(argv[0] == binary and argv[1] == "probe", f"{name}: {kind} does not run {binary} probe: {argv}")
            need(argv[argv.index("--socket") + 1] == socket, f"{name}: {kind} probes another socket than {socket}")
            need(argv[-1] == route, f"{name}: {kind} asks {argv[-1]}, not {route}")
            if "--timeout" in argv:
                t = argv[argv.index("--timeout") + 1]
                need(t.endswith("s") and float(t[:-1]) < p.get("timeoutSeconds", 1), f"{name}: {kind} --timeout {t} >= timeoutSeconds")
        startup = sc["startupProbe"]
        budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        startup_timeout = config.get("identity", {}).get("startup_timeout", "120s")
        need(budget >= int(startup_timeout.rstrip("s")), f"{name}: startupProbe budget {budget}s < identity.startup_timeout {startup_timeout}")
        # The shared volume: in memory, mounted by both, the app read-only.
        sdir = os.path.dirname(socket)
        sc_mounts = {m["mountPath"]: m for m in sc["volumeMounts"]}
        app_mounts = {m["mountPath"]: m for m in app["volumeMounts"]}
        need(sdir in sc_mounts and sdir in app_mounts, f"{name}: {sdir} is not mounted in both containers")
        shared = volumes[sc_mounts[sdir]["name"]]
        need(app_mounts[sdir]["name"] == sc_mounts[sdir]["name"], f"{name}: the containers mount different volumes at {sdir}")
        need(shared.get("emptyDir", {}).get("medium") == "Memory", f"{name}: the shared volume is not an in-memory emptyDir")
        need(not sc_mounts[sdir].get("readOnly") and app_mounts[sdir].get("readOnly"), f"{name}: sidecar rw / app ro expected at {sdir}")
        for t in config.get("token", []):
            if "sink" in t:
                need(t["sink"].startswith(sdir + "/"), f"{name}: sink {t['sink']} is not on the shared volume")
        # The app asks for a token the sidecar keeps warm (a cache hit, no exchange).
        env = {e["name"]: e.get("value") for e in app.get("env", [])}
        warm = {t.get("workspace_group_id") for t in config.get("token", [])}
        need(env.get("WORKSPACE_GROUP_ID") in warm, f"{name}: the app's WORKSPACE_GROUP_ID is not a warm token")
        notes.append(name)
    return f"restartPolicy Always, exec probes `{binary} probe` on the configured socket, shared in-memory volume ({', '.join(notes)})"


@check("manifests-hardened")
def manifests_hardened():
    user = image_facts()["user"]
    need(user, "the Dockerfile's final stage sets no USER")
    image_uid = int(user.split(":")[0])
    for name in OVERLAYS:
        objs = rendered(name)
        dep, pod, sc, app, _, _, config, _ = pod_facts(objs)
        psc = pod.get("securityContext", {})
        need(psc.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot")
        need(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: pod seccomp")
        need(pod.get("automountServiceAccountToken") is False, f"{name}: the API token is mounted")
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            need(not pod.get(flag), f"{name}: {flag}")
        for c in (sc, app):
            s = c.get("securityContext", {})
            cn = f"{name}/{c['name']}"
            need(s.get("runAsNonRoot") is True, f"{cn}: runAsNonRoot")
            need(s.get("readOnlyRootFilesystem") is True, f"{cn}: readOnlyRootFilesystem")
            need(s.get("allowPrivilegeEscalation") is False, f"{cn}: allowPrivilegeEscalation")
            need(not s.get("privileged"), f"{cn}: privileged")
            need(s.get("capabilities", {}).get("drop") == ["ALL"], f"{cn}: capabilities drop ALL")
            need(s.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{cn}: seccomp")
            need(s.get("runAsUser", 0) >= 10000, f"{cn}: runAsUser below 10000")
            r = c.get("resources", {})
            for part in ("requests", "limits"):
                need(r.get(part, {}).get("memory") and r.get(part, {}).get("cpu"), f"{cn}: resources.{part}")
        need(sc["securityContext"]["runAsUser"] == image_uid, f"{name}: sidecar uid != image USER {image_uid}")
        tag = sc["image"].rsplit(":", 1)[-1]
        need(tag == cargo_version(), f"{name}: sidecar image tag {tag} != Cargo.toml version {cargo_version()}")
        # Group access: the socket and token files are group-readable and the app
        # has the group (fsGroup), and the uid allow-list admits app and probes.
        fs_group = psc.get("fsGroup")
        need(fs_group is not None, f"{name}: no fsGroup for the shared volume")
        listen = config["listen"]
        need(int(listen.get("socket_mode", "0660"), 8) & 0o060 == 0o060, f"{name}: socket not group rw")
        allowed = listen.get("allowed_uids", [])
        if allowed:
            need(app["securityContext"]["runAsUser"] in allowed, f"{name}: app uid not in allowed_uids")
            need(sc["securityContext"]["runAsUser"] in allowed, f"{name}: sidecar uid (its probes) not in allowed_uids")
        for t in config.get("token", []):
            if "sink" in t:
                need(int(t.get("sink_mode", "0640"), 8) & 0o040, f"{name}: sink not group-readable")
        policy = obj(objs, "NetworkPolicy")
        sel = policy["spec"]["podSelector"]["matchLabels"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        need(all(labels.get(k) == v for k, v in sel.items()), f"{name}: the NetworkPolicy does not select the pod")
        need(not policy["spec"].get("ingress"), f"{name}: ingress allowed")
    return "pod and both containers: non-root, read-only root, no privilege escalation, caps dropped, seccomp, resources"


@check("manifests-overlays")
def manifests_overlays():
    def sa(name):
        return obj(rendered(name), "ServiceAccount")["metadata"].get("annotations", {})

    def template(name):
        return obj(rendered(name), "Deployment")["spec"]["template"]

    need(not sa("base"), "the base ServiceAccount should carry no cloud annotation")
    need(re.match(r"arn:aws:iam::\d{12}:role/", sa("eks").get("eks.amazonaws.com/role-arn", "")), "eks: no IRSA role-arn annotation")
    need(template("eks")["metadata"]["annotations"].get("eks.amazonaws.com/skip-containers") == "app", "eks: skip-containers")
    need(sa("gke").get("iam.gke.io/gcp-service-account", "").endswith(".iam.gserviceaccount.com"), "gke: no gcp-service-account annotation")
    need(template("gke")["spec"].get("nodeSelector", {}).get("iam.gke.io/gke-metadata-server-enabled") == "true", "gke: nodeSelector")
    need(template("aks")["metadata"]["labels"].get("azure.workload.identity/use") == "true", "aks: no workload-identity label on the pod")
    need(re.match(r"[0-9a-f-]{36}$", sa("aks").get("azure.workload.identity/client-id", "")), "aks: no client-id annotation")
    need(template("aks")["metadata"]["annotations"].get("azure.workload.identity/skip-containers") == "app", "aks: skip-containers")
    # Overlays change identity wiring only: the containers are the base's.
    base = template("base")["spec"]
    for name in ("eks", "gke", "aks"):
        t = template(name)["spec"]
        need(t["initContainers"] == base["initContainers"] and t["containers"] == base["containers"], f"{name}: containers differ from base")
    return "eks IRSA role-arn, gke gcp-service-account + nodeSelector, aks use label + client-id; containers as in base"


@check("config-check")
def config_check():
    need(S2IAM.exists(), f"{S2IAM} not built (cargo build first)")
    texts = {name: pod_facts(rendered(name))[5] for name in ("base", "template-sidecar")}
    for name in APP_EXAMPLES:
        objs = rendered(name)
        pod = pod_spec(workload(objs))
        texts[name] = config_of(objs, pod, (pod.get("initContainers") or pod["containers"])[0])
    texts["systemd"] = UNIT_CONFIG.read_text()
    texts["systemd example-report"] = APP_UNIT_CONFIG.read_text()
    work = Path(tempfile.mkdtemp(prefix="s2iam-config-check-"))
    try:
        # The mounts exist before s2iam starts (an emptyDir volume in a pod,
        # RuntimeDirectory= in the systemd units): `serve --check` refuses a socket
        # directory that does not, and never creates it.
        for mount in ("run-s2iam", "run-example-report"):
            (work / mount).mkdir(mode=0o750)
        for name, text in texts.items():
            # Templates are rendered with placeholders; the mount paths point into a
            # scratch directory.
            path = work / f"{name.replace(' ', '-')}.toml"
            path.write_text(path_rewriter({"/run/s2iam": str(work / "run-s2iam"), "/run/example-report": str(work / "run-example-report")})(text))
            cmd = [str(S2IAM), "serve", "--check", "--config", str(path)]
            if not re.search(r"(?m)^\s*socket\s*=", text):
                # The default socket (/run/s2iam/s2iam.sock), moved into the scratch mount.
                cmd += ["--socket", str(work / "run-s2iam" / "s2iam.sock")]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env={"PATH": HOST_PATH})
            need(out.returncode == 0, f"s2iam serve --check ({name}): {out.stderr.strip()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return f"s2iam serve --check accepts every config ({', '.join(texts)}), templates rendered with placeholders"


# ---------------------------------------------------------------- external validators


def venv_python_ok():
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        raise Skip("kubernetes-validate is not installed (scripts/setup-deploy-tools needs PyPI)")


@check("kubernetes-validate")
def kubernetes_validate_check():
    venv_python_ok()
    import kubernetes_validate as kv

    count = 0
    for version in K8S_VERSIONS:
        for name in OVERLAYS:
            for o in rendered(name):
                try:
                    kv.validate(o, version, strict=True)
                except kv.ValidationError as e:
                    raise Fail(f"{name} {o['kind']}/{o['metadata']['name']} against {version}: {e.message}")
                count += 1
    # The validator bites: 1.27 has no native sidecars, so restartPolicy is refused.
    dep = obj(rendered("base"), "Deployment")
    try:
        kv.validate(dep, "1.27.0", strict=True)
        raise Fail("1.27 accepted the Deployment: its sidecar has no restartPolicy, or validation is not strict")
    except kv.ValidationError:
        pass
    return f"{count} objects valid (strict) against {', '.join(K8S_VERSIONS)}; 1.27 rightly refuses restartPolicy on an initContainer (kubernetes-validate {kv.__version__ if hasattr(kv, '__version__') else ''})".replace(" )", ")")


@check("checkov")
def checkov_check():
    checkov = VENV / "bin" / "checkov"
    if not checkov.exists():
        raise Skip("checkov is not installed (scripts/setup-deploy-tools needs PyPI)")
    d = ROOT / "target" / "deploy-rendered"
    need((d / "base.yaml").exists(), "nothing rendered")
    shutil.copy(DOCKERFILE, d / "Dockerfile")
    out = subprocess.run(
        [str(checkov), "-d", str(d), "--framework", "kubernetes", "dockerfile", "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=300,
    )
    try:
        reports = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise Fail(f"checkov gave no JSON (exit {out.returncode}): {out.stderr[-2000:]}")
    if isinstance(reports, dict):
        reports = [reports]
    summary, problems = [], []
    for r in reports:
        s = r["summary"]
        summary.append(f"{r['check_type']}: {s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped")
        for c in r["results"].get("failed_checks", []):
            problems.append(f"{c['check_id']} {c['check_name']} in {c['file_path']} {c.get('resource', '')}")
        for c in r["results"].get("skipped_checks", []):
            reason = (c.get("check_result", {}).get("suppress_comment") or "").strip()
            if len(reason) < 20:
                problems.append(f"{c['check_id']} skipped without a reason in {c['file_path']}")
        if s.get("parsing_errors"):
            problems.append(f"{r['check_type']}: {s['parsing_errors']} parsing errors")
    types = {r["check_type"] for r in reports}
    need(types >= {"kubernetes", "dockerfile"}, f"checkov scanned only {sorted(types)}")
    need(not problems, "; ".join(problems))
    return "; ".join(summary) + f" (checkov {subprocess.run([str(checkov), '--version'], capture_output=True, text=True).stdout.strip()})"


# ---------------------------------------------------------------- systemd


def unit_service_section(path=UNIT):
    entries = []
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        entries.append((section, k.strip(), v.strip()))
    return entries


def unit_get(entries, key, section="Service"):
    vals = [v for s, k, v in entries if s == section and k == key]
    return vals[-1] if vals else None


@check("systemd-unit")
def systemd_unit():
    e = unit_service_section()
    required = {
        "DynamicUser": "yes", "RuntimeDirectory": "s2iam", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "SystemCallArchitectures": "native",
    }
    for k, v in required.items():
        need(unit_get(e, k) == v, f"{k}={unit_get(e, k)!r}, want {v!r}")
    filters = [v for s, k, v in e if k == "SystemCallFilter"]
    need("@system-service" in filters, "SystemCallFilter=@system-service missing")
    cfg = tomllib.loads(UNIT_CONFIG.read_text())
    socket = cfg["listen"]["socket"]
    rundir = "/run/" + unit_get(e, "RuntimeDirectory")
    need(os.path.dirname(socket) == rundir, f"socket {socket} is not in RuntimeDirectory {rundir}")
    for t in cfg.get("token", []):
        if "sink" in t:
            need(t["sink"].startswith(rundir + "/"), f"sink {t['sink']} is outside {rundir} (ProtectSystem=strict)")
    start = shlex.split(unit_get(e, "ExecStart"))
    need(start[1:] == ["serve", "--config", "/etc/s2iam/config.toml"], f"ExecStart {start}")
    need(f"--socket {socket}" in unit_get(e, "ExecStartPost"), "ExecStartPost probes another socket")

    sa = shutil.which("systemd-analyze")
    if not sa:
        return "static checks only: no systemd-analyze here"
    work = Path(tempfile.mkdtemp(prefix="s2iam-unit-"))
    try:
        # verify needs ExecStart's binary to exist: point it at the built one.
        unit = work / "s2iam.service"
        unit.write_text(UNIT.read_text().replace("/usr/local/bin/s2iam", str(S2IAM)))
        out = subprocess.run([sa, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        need(out.returncode == 0 and not out.stderr.strip(), f"systemd-analyze verify: {out.stderr.strip()}")
        out = subprocess.run([sa, "security", "--offline=true", str(unit)], capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", out.stdout)
        need(m, f"systemd-analyze security said: {out.stdout[-500:]} {out.stderr[-500:]}")
        need(float(m.group(1)) <= 2.0, f"exposure {m.group(1)} {m.group(2)} > 2.0")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    version = subprocess.run([sa, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return f"systemd-analyze verify clean; security exposure {m.group(1)} {m.group(2)} ({version})"


# ---------------------------------------------------------------- running it


def inside_isolated():
    out = subprocess.run(["ip", "-o", "addr", "show", "lo"], capture_output=True, text=True)
    return "169.254.169.254" in out.stdout


def path_rewriter(mapping):
    """One pass: each mount path (as a whole path component prefix) -> host path."""
    if not mapping:
        return lambda s: s
    alts = "|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True))
    rx = re.compile(rf"(?<![\w.-])({alts})(?![\w.-])")
    return lambda s: rx.sub(lambda m: mapping[m.group(1)], s)


def k8s_expand(s, env):
    """Kubernetes' $(VAR) expansion in command/args ($$ escapes a $)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), s)


class MockCloud:
    """s2iam-testserver playing GCP on 169.254.169.254:80 and the auth service on loopback."""

    def __init__(self, work):
        need(TESTSERVER.exists(), f"{TESTSERVER} not built")
        self.info_file = work / "testserver.json"
        self.log = open(work / "testserver.log", "w")
        self.proc = subprocess.Popen(
            [str(TESTSERVER), "--port", "0", "--info-file", str(self.info_file), "--shutdown-on-stdin-close",
             "--cloud", "gcp", "--cloud-listen", "169.254.169.254:80"],
            stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not self.info_file.exists():
            need(self.proc.poll() is None, f"testserver exited: {(work / 'testserver.log').read_text()[-1000:]}")
            need(time.monotonic() < deadline, "testserver did not start")
            time.sleep(0.05)
        info = json.loads(self.info_file.read_text())["server_info"]
        self.auth_url = info["endpoints"]["auth"]
        self.requests_url = info["endpoints"]["requests"]

    def exchanges(self):
        with urllib.request.urlopen(self.requests_url, timeout=5) as r:
            return [x for x in json.load(r) if "/auth/iam/" in x.get("path", "")]

    def stop(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Proc:
    def __init__(self, argv, env, uid, gid, groups, log, umask=0o022):
        self.log_path = log
        self.log = open(log, "w")
        self.p = subprocess.Popen(argv, env=env, user=uid, group=gid, extra_groups=groups, umask=umask,
                                  stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                  cwd="/", start_new_session=True)

    def text(self):
        self.log.flush()
        return Path(self.log_path).read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, wait=10):
        if self.p.poll() is None:
            os.killpg(self.p.pid, sig)
        try:
            return self.p.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
            return None
        finally:
            self.log.close()


def ensure_hosts_readable(work):
    """../shared/bin/isolated bind-mounts a 0600 /etc/hosts (mktemp's mode), so
    non-root containers could not resolve metadata.google.internal. In our own
    private mount namespace (scripts/check-deploy's unshare), mount a 0644 copy."""
    if os.stat("/etc/hosts").st_mode & 0o004:
        return
    need(os.environ.get("S2IAM_DEPLOY_PRIVATE_MOUNTS") == "1",
         "/etc/hosts is unreadable to non-root users and this is no private mount namespace")
    copy = work / "hosts"
    copy.write_text(Path("/etc/hosts").read_text())
    os.chmod(copy, 0o644)
    subprocess.run(["mount", "--bind", str(copy), "/etc/hosts"], check=True, capture_output=True)


def logs_of(procs):
    return "".join(f"\n  --- {Path(p.log_path).name} (last lines) ---\n  " + "\n  ".join(p.text().splitlines()[-8:])
                   for p in procs)


def run_as(argv, uid, gid, groups, env=None, timeout=10):
    return subprocess.run(argv, env=env or {"PATH": HOST_PATH}, user=uid, group=gid, extra_groups=groups,
                          capture_output=True, text=True, timeout=timeout, cwd="/")


def ro_bind(src, dst):
    dst.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True, capture_output=True)
    return dst


def install_binary(work):
    """The image's /usr/local/bin/s2iam: a copy any uid can run."""
    need(S2IAM.exists(), f"{S2IAM} not built")
    dst = work / "image-bin" / "s2iam"
    dst.parent.mkdir()
    shutil.copy(S2IAM, dst)
    os.chmod(dst, 0o755)
    return dst


def image_binary_path():
    facts = image_facts()
    for c in facts["copies"]:
        if c[-1] == facts["entrypoint"][0]:
            return c[-1]
    raise Fail("the Dockerfile copies no binary to its ENTRYPOINT")


def wait_probe(argv, env, uid, gid, groups, probe, limit):
    """Runs an exec probe every periodSeconds until it passes: seconds it took."""
    started = time.monotonic()
    period = probe.get("periodSeconds", 10)
    threshold = probe.get("failureThreshold", 3)
    last = None
    for _ in range(threshold):
        last = run_as(argv, uid, gid, groups, env, timeout=probe.get("timeoutSeconds", 1) + 5)
        if last.returncode == 0:
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            break
        time.sleep(period)
    raise Fail(f"probe {argv} never passed: {last.stderr.strip() if last else ''}")


@check("run-kubernetes-pod")
def run_kubernetes_pod():
    if not inside_isolated():
        raise Skip("not inside ../shared/bin/isolated (needs root for network namespaces): the pod is not run")
    dep, pod, sc, app, config_path, config_text, config, volumes = pod_facts(rendered("base"))
    psc = pod.get("securityContext", {})
    fs_group = psc.get("fsGroup")
    need(fs_group is not None, "no fsGroup: the kubelet would give the shared volume no group")
    groups = [fs_group] + psc.get("supplementalGroups", [])
    work = Path(tempfile.mkdtemp(prefix="s2iam-pod-"))
    os.chmod(work, 0o755)
    mounted, procs, cloud = [], [], None
    try:
        ensure_hosts_readable(work)
        binary = install_binary(work)
        image_path = image_binary_path()
        # Volumes, as the kubelet makes them.
        vol_dirs = {}
        for name, v in volumes.items():
            d = work / f"vol-{name}"
            d.mkdir()
            if "emptyDir" in v:  # world-writable, setgid to the fsGroup
                os.chown(d, 0, fs_group)
                os.chmod(d, 0o2777)
            elif "configMap" not in v:
                raise Fail(f"volume {name}: only emptyDir and configMap are emulated")
            vol_dirs[name] = d

        def mapping_for(c):
            m = {}
            for vm in c.get("volumeMounts", []):
                src = vol_dirs[vm["name"]]
                if vm.get("readOnly"):
                    dst = work / f"ro-{c['name']}-{vm['name']}"
                    src = ro_bind(src, dst)
                    mounted.append(dst)
                m[vm["mountPath"]] = str(src)
            if c["image"].split("/")[-1].startswith("s2iam"):
                m[image_path] = str(binary)
            return m

        sc_map = mapping_for(sc)
        app_map = mapping_for(app)
        sc_rw, app_rw = path_rewriter(sc_map), path_rewriter(app_map)
        # ConfigMap files (the config text rewritten with the sidecar's mounts).
        for name, v in volumes.items():
            if "configMap" in v:
                cm = obj(rendered("base"), "ConfigMap", v["configMap"]["name"])
                for key, text in cm["data"].items():
                    f = vol_dirs[name] / key
                    f.write_text(sc_rw(text))
                    os.chmod(f, 0o644)
        cloud = MockCloud(work)

        def container_env(c, rewrite, extra):
            env = {"PATH": HOST_PATH}
            for e in c.get("env", []):
                need("value" in e, f"{c['name']}: env {e['name']} is not a plain value")
                env[e["name"]] = rewrite(e["value"])
            env.update(extra)
            return env

        def container_argv(c, env, rewrite):
            facts = image_facts() if c is sc else {"entrypoint": None, "cmd": None}
            command = c.get("command") or facts["entrypoint"]
            args = c.get("args") if "args" in c else (facts["cmd"] if "command" not in c else [])
            need(command, f"{c['name']}: no command")
            return [rewrite(k8s_expand(a, env)) for a in command + (args or [])]

        def probe_cmd(c, kind, env, rewrite):
            return [rewrite(k8s_expand(a, env)) for a in c[kind]["exec"]["command"]]

        # 1. The sidecar, its args and env as rendered; the auth URL is the mock's.
        sc_env = container_env(sc, sc_rw, {"S2IAM_JWT_SERVER_URL": cloud.auth_url, "S2IAM_ALLOW_HTTP": "1"})
        sc_uid, sc_gid = sc["securityContext"]["runAsUser"], sc["securityContext"]["runAsGroup"]
        sc_argv = container_argv(sc, sc_env, sc_rw)
        sidecar = Proc(sc_argv, sc_env, sc_uid, sc_gid, groups, work / "sidecar.log")
        procs.append(sidecar)
        took = wait_probe(probe_cmd(sc, "startupProbe", sc_env, sc_rw), sc_env, sc_uid, sc_gid, groups, sc["startupProbe"], 60)
        need(sidecar.p.poll() is None, f"the sidecar exited: {sidecar.text()[-1500:]}")

        # 2. Started: the kubelet starts the app container, with its own command.
        app_env = container_env(app, app_rw, {})
        app_uid, app_gid = app["securityContext"]["runAsUser"], app["securityContext"]["runAsGroup"]
        appp = Proc(container_argv(app, app_env, app_rw), app_env, app_uid, app_gid, groups, work / "app.log")
        procs.append(appp)
        sock_line = file_line = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (sock_line and file_line):
            for line in appp.text().splitlines():
                if line.startswith("socket:"):
                    sock_line = line
                if line.startswith("file:"):
                    file_line = line
            if appp.p.poll() is not None:
                break
            time.sleep(0.1)
        app_out = appp.text()
        need(sock_line and file_line, f"the app printed no token lines: {app_out[-1500:]}")
        wg = app_env["WORKSPACE_GROUP_ID"]
        m = re.fullmatch(rf"socket: database token for {re.escape(wg)}, expires in (\d+)s", sock_line)
        need(m and int(m.group(1)) > 60, f"socket line: {sock_line!r}")
        sink = sc_rw(config["token"][0]["sink"])
        jwt = Path(sink).read_text()
        m2 = re.fullmatch(r"file: (\S+) holds a JWT of (\d+) bytes", file_line)
        need(m2 and int(m2.group(2)) == len(jwt) and jwt.count(".") == 2, f"file line: {file_line!r} (file has {len(jwt)} bytes)")

        # 3. The probes of both containers pass, run as their containers' users.
        for c, env, rw, uid, gid in ((app, app_env, app_rw, app_uid, app_gid), (sc, sc_env, sc_rw, sc_uid, sc_gid)):
            for kind in ("readinessProbe", "livenessProbe"):
                out = run_as(probe_cmd(c, kind, env, rw), uid, gid, groups, env)
                need(out.returncode == 0, f"{c['name']} {kind} failed: {out.stdout}{out.stderr}")

        # 4. Who may not: another uid with the group (allowed_uids refuses it), and
        #    a uid without the group (file modes refuse it).
        app_sock = app_rw(config["listen"]["socket"])
        url = f"http://localhost/v1/token/database?workspaceGroupID={wg}"
        if config["listen"].get("allowed_uids"):
            out = run_as(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", app_sock, url], 20000, 20000, groups)
            need(out.stdout == "403", f"uid 20000 in the group got {out.stdout!r}, want 403")
        out = run_as(["curl", "-sS", "--unix-socket", app_sock, url], 20001, 20001, [])
        need(out.returncode != 0, "a uid outside the group reached the socket")
        out = run_as(["cat", app_rw(config["token"][0]["sink"])], 20001, 20001, [])
        need(out.returncode != 0, "a uid outside the group read the token file")
        # The raw token over the socket is the file's.
        out = run_as(["curl", "-sS", "--fail", "--unix-socket", app_sock, url + "&format=raw"], app_uid, app_gid, groups)
        need(out.stdout.strip() == jwt.strip(), "the socket and the file hold different tokens")

        # 5. One exchange upstream: the app's request was a cache hit.
        ex = [x for x in cloud.exchanges() if x.get("workspace_group_id") == wg]
        need(len(ex) == 1 and ex[0]["status"] == 200, f"{len(ex)} exchanges for {wg}: {ex}")
        need(ex[0]["identity"]["provider"] == "gcp", f"identity: {ex[0]['identity']}")

        # 6. Logs are JSON (log.format) and never hold the token.
        appp.stop(signal.SIGKILL)
        logs = sidecar.text()
        need(jwt.strip() not in logs and jwt.strip() not in app_out, "a token appears in the logs")
        lines = [ln for ln in logs.splitlines() if ln.strip()]
        need(lines and all(ln.startswith("{") for ln in lines), f"sidecar logs are not JSON: {lines[:3]}")

        # 7. The pod stops: SIGTERM, exit 0, socket removed.
        code = sidecar.stop(signal.SIGTERM, wait=pod.get("terminationGracePeriodSeconds", 30))
        need(code == 0, f"the sidecar exited {code} on SIGTERM: {logs[-800:]}")
        need(not Path(sc_rw(config["listen"]["socket"])).exists(), "the socket file is left behind")
        return (f"sidecar uid {sc_uid} started (startupProbe passed after {took:.1f}s), app uid {app_uid} printed "
                f"[{sock_line}] and [{file_line}]; probes pass; uid 20000 refused (403), uid 20001 refused (no group); "
                f"1 upstream exchange; JSON logs without tokens; SIGTERM -> exit 0")
    except Fail as e:
        raise Fail(f"{e}{logs_of(procs)}")
    finally:
        for p in procs:
            if p.p.poll() is None:
                p.stop(signal.SIGKILL, wait=5)
        if cloud:
            cloud.stop()
        for d in reversed(mounted):
            subprocess.run(["umount", str(d)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


@check("run-systemd-service")
def run_systemd_service():
    if not inside_isolated():
        raise Skip("not inside ../shared/bin/isolated (needs root for network namespaces): the unit is not run")
    e = unit_service_section()
    work = Path(tempfile.mkdtemp(prefix="s2iam-unit-"))
    os.chmod(work, 0o755)
    procs, cloud = [], None
    dyn_uid = 61184  # the first uid systemd hands to DynamicUser= services
    try:
        ensure_hosts_readable(work)
        binary = install_binary(work)
        rundir = work / "run-s2iam"
        rundir.mkdir(mode=int(unit_get(e, "RuntimeDirectoryMode") or "0755", 8))
        os.chmod(rundir, int(unit_get(e, "RuntimeDirectoryMode") or "0755", 8))
        os.chown(rundir, dyn_uid, dyn_uid)
        etc = work / "etc-s2iam"
        etc.mkdir()
        mapping = {"/run/s2iam": str(rundir), "/etc/s2iam": str(etc), "/usr/local/bin/s2iam": str(binary)}
        rw = path_rewriter(mapping)
        (etc / "config.toml").write_text(rw(UNIT_CONFIG.read_text()))
        os.chmod(etc / "config.toml", 0o644)
        config = tomllib.loads(UNIT_CONFIG.read_text())
        cloud = MockCloud(work)
        env = {"PATH": HOST_PATH, "S2IAM_JWT_SERVER_URL": cloud.auth_url, "S2IAM_ALLOW_HTTP": "1"}
        umask = int(unit_get(e, "UMask") or "0022", 8)
        service = Proc([rw(a) for a in shlex.split(unit_get(e, "ExecStart"))], env, dyn_uid, dyn_uid, [], work / "service.log", umask)
        procs.append(service)
        # ExecStartPost: the service counts as started once it returns 0.
        post = [rw(a) for a in shlex.split(unit_get(e, "ExecStartPost"))]
        started = time.monotonic()
        out = run_as(post, dyn_uid, dyn_uid, [], {"PATH": HOST_PATH}, timeout=min(60, int(unit_get(e, "TimeoutStartSec") or 90)))
        need(out.returncode == 0, f"ExecStartPost failed: {out.stderr} {service.text()[-1000:]}")
        took = time.monotonic() - started
        # Another local user reads the token both ways.
        sock = rw(config["listen"]["socket"])
        wg = config["token"][0]["workspace_group_id"]
        out = run_as(["curl", "-sS", "--fail", "--unix-socket", sock,
                      f"http://localhost/v1/token/database?workspaceGroupID={wg}&format=raw"], 20000, 20000, [])
        need(out.returncode == 0 and out.stdout.count(".") == 2, f"uid 20000 got no token: {out.stderr}")
        jwt = out.stdout.strip()
        out = run_as(["cat", rw(config["token"][0]["sink"])], 20000, 20000, [])
        need(out.returncode == 0 and out.stdout.strip() == jwt, f"the sink is not the same token for uid 20000: {out.stderr}")
        need(jwt not in service.text(), "the token appears in the journal")
        code = service.stop(signal.SIGTERM, wait=int(unit_get(e, "TimeoutStopSec") or 30))
        clean = {0} | {int(c) for c in (unit_get(e, "SuccessExitStatus") or "").split() if c.isdigit()}
        need(code in clean, f"exit {code} on SIGTERM (clean for the unit: {sorted(clean)})")
        need(not Path(sock).exists(), "the socket file is left behind")
        return (f"ExecStart as a dynamic uid, ExecStartPost returned once ready ({took:.1f}s); another local uid "
                f"read the token over the socket and from the sink; SIGTERM -> exit {code} (SuccessExitStatus)")
    except Fail as e:
        raise Fail(f"{e}{logs_of(procs)}")
    finally:
        for p in procs:
            if p.p.poll() is None:
                p.stop(signal.SIGKILL, wait=5)
        if cloud:
            cloud.stop()
        shutil.rmtree(work, ignore_errors=True)


class LoopbackMocks:
    """s2iam-testserver (GCP) on loopback ports, for runs that need no namespace."""

    def __init__(self, work):
        need(TESTSERVER.exists(), f"{TESTSERVER} not built")
        info_file = work / "loopback-testserver.json"
        self.log = open(work / "loopback-testserver.log", "w")
        self.proc = subprocess.Popen(
            [str(TESTSERVER), "--port", "0", "--info-file", str(info_file), "--shutdown-on-stdin-close", "--cloud", "gcp"],
            stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not info_file.exists() or not info_file.read_text().strip().endswith("}"):
            need(self.proc.poll() is None and time.monotonic() < deadline, "the loopback testserver did not start")
            time.sleep(0.05)
        info = json.loads(info_file.read_text())["server_info"]
        cloud = info["cloud_url"]
        self.base = f"http://127.0.0.1:{info['port']}"
        self.env = {
            "PATH": HOST_PATH, "S2IAM_JWT_SERVER_URL": info["endpoints"]["auth"], "S2IAM_ALLOW_HTTP": "1",
            "S2IAM_GCP_METADATA_ENDPOINT": cloud, "S2IAM_GCP_IAMCREDENTIALS_ENDPOINT": cloud,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": cloud, "S2IAM_ECS_CREDENTIALS_ENDPOINT": cloud,
            "S2IAM_AZURE_IMDS_ENDPOINT": cloud, "AZURE_AUTHORITY_HOST": cloud,
        }

    def behave(self, **behaviour):
        req = urllib.request.Request(f"{self.base}/_mock/behaviour", data=json.dumps(behaviour).encode(),
                                     method="PUT", headers={"content-type": "application/json"})
        urllib.request.urlopen(req, timeout=5).read()

    def stop(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def read_option_password(path):
    """The password my_print_defaults reads from an option file (None without it)."""
    tool = shutil.which("my_print_defaults")
    if not tool:
        return None
    out = subprocess.run([tool, f"--defaults-file={path}", "client"], capture_output=True, text=True, timeout=10)
    need(out.returncode == 0, f"my_print_defaults {path}: {out.stderr}")
    return next((l.split("=", 1)[1] for l in out.stdout.splitlines() if l.startswith("--password=")), "")


@check("run-app-examples")
def run_app_examples():
    """Each application-mode example's s2iam command line, as rendered, against
    loopback mocks (mount paths become temporary directories)."""
    work = Path(tempfile.mkdtemp(prefix="s2iam-apps-"))
    os.chmod(work, 0o755)
    mocks, procs, notes = None, [], []
    try:
        mocks = LoopbackMocks(work)
        binary = install_binary(work)

        def sandbox(name, objs, container, extra=()):
            d = work / name
            d.mkdir()
            (d / "run").mkdir()
            (d / "etc").mkdir()
            rw = path_rewriter({"/run/s2iam": str(d / "run"), "/etc/s2iam": str(d / "etc"), image_binary_path(): str(binary), **dict(extra)})
            pod = pod_spec(workload(objs))
            (d / "etc" / "config.toml").write_text(rw(config_of(objs, pod, container)))
            return d, rw

        # 1. The CronJob's init container: --once writes the option file and exits 0,
        #    and exits non-zero, writing nothing, when the auth service refuses.
        objs = rendered("cronjob-once")
        init = pod_spec(workload(objs))["initContainers"][0]
        d, rw = sandbox("cronjob", objs, init)
        argv = [str(binary)] + [rw(a) for a in init["args"]]
        out = subprocess.run(argv, env=mocks.env, capture_output=True, text=True, timeout=60)
        need(out.returncode == 0, f"cronjob-once: serve --once exited {out.returncode}: {out.stderr[-1500:]}")
        cnf = d / "run" / "my.cnf"
        need(cnf.exists() and (cnf.stat().st_mode & 0o777) == 0o640, "cronjob-once: my.cnf not written with mode 0640")
        pw = read_option_password(cnf)
        need(pw is None or pw.count(".") == 2, f"cronjob-once: my_print_defaults read no JWT password ({pw!r})")
        need("eyJ" not in out.stderr + out.stdout, "cronjob-once: a token in the output")
        cnf.unlink()
        mocks.behave(return_error=True, error_code=403, error_message="not allowed")
        out = subprocess.run(argv, env=mocks.env, capture_output=True, text=True, timeout=120)
        need(out.returncode != 0 and "403" in out.stderr and not cnf.exists(), f"cronjob-once: with the auth service refusing: exit {out.returncode}, {out.stderr[-800:]}")
        mocks.behave()
        notes.append("cronjob-once: --once wrote my.cnf" + (" (my_print_defaults read the JWT)" if pw else "") + ", and failed the pod when auth refused")

        # 2. s2iam run as the entrypoint: the app (here: a shell printing its
        #    environment) gets the JWT in S2_PASSWORD.
        objs = rendered("run-entrypoint")
        app = pod_spec(workload(objs))["containers"][0]
        d, rw = sandbox("run", objs, app)
        cmd = [rw(a) for a in app["command"]]
        cmd = cmd[:cmd.index("--") + 1] + ["sh", "-c", 'printf %s "$S2_PASSWORD"']
        out = subprocess.run(cmd, env=mocks.env, capture_output=True, text=True, timeout=60)
        need(out.returncode == 0 and out.stdout.startswith("eyJ") and out.stdout.count(".") == 2,
             f"run-entrypoint: exit {out.returncode}, stdout {out.stdout[:40]!r}, {out.stderr[-800:]}")
        notes.append("run-entrypoint: the command got a JWT in S2_PASSWORD")

        # 3. The native sidecar with a template: ready only once the file is there.
        objs = rendered("template-sidecar")
        _, pod, sc, _, _, _, config, _ = pod_facts(objs)
        d, rw = sandbox("sidecar", objs, sc)
        # As the pod runs it: the sidecar's uid, the pod's fsGroup on the volume.
        uid = sc["securityContext"]["runAsUser"]
        fs_group = pod["securityContext"]["fsGroup"]
        as_pod = {"user": uid, "group": fs_group, "extra_groups": [fs_group]} if os.geteuid() == 0 else {}
        if as_pod:
            os.chown(d / "run", uid, fs_group)
            os.chmod(d / "etc" / "config.toml", 0o644)
        p = Proc([str(binary)] + [rw(a) for a in sc["args"]], mocks.env, as_pod.get("user"), as_pod.get("group"),
                 as_pod.get("extra_groups"), work / "sidecar.log")
        procs.append(p)
        probe = [rw(a) for a in probe_argv(sc["startupProbe"])]
        deadline = time.monotonic() + 30
        while subprocess.run(probe, env=mocks.env, capture_output=True, **as_pod).returncode != 0:
            need(time.monotonic() < deadline and p.p.poll() is None, f"template-sidecar: never ready: {p.text()[-1500:]}")
            time.sleep(0.2)
        dest = Path(rw(config["template"][0]["destination"]))
        need(dest.exists(), "template-sidecar: ready before the template was written")
        pw = read_option_password(dest)
        need(pw is None or pw == (d / "run" / "database.jwt").read_text(), "template-sidecar: the option file's password is not the sink's token")
        need(p.stop() == 0, "template-sidecar: SIGTERM did not exit 0")
        notes.append("template-sidecar: ready once my.cnf was rendered, with the sink's token")

        # 4. The systemd job's ExecStartPre.
        e = unit_service_section(APP_UNIT)
        rundir = "/run/" + unit_get(e, "RuntimeDirectory")
        d = work / "unit"
        d.mkdir()
        rw = path_rewriter({rundir: str(d / "run"), "/etc/s2iam": str(d / "etc"), "/usr/local/bin/s2iam": str(binary)})
        (d / "run").mkdir()
        (d / "etc").mkdir()
        (d / "etc" / APP_UNIT_CONFIG.name).write_text(rw(APP_UNIT_CONFIG.read_text()))
        out = subprocess.run([rw(a) for a in shlex.split(unit_get(e, "ExecStartPre"))], env=mocks.env, capture_output=True, text=True, timeout=60)
        need(out.returncode == 0, f"example-report ExecStartPre exited {out.returncode}: {out.stderr[-1000:]}")
        start = shlex.split(unit_get(e, "ExecStart"))
        option_file = next(a.split("=", 1)[1] for a in start if a.startswith("--defaults-extra-file="))
        need(Path(rw(option_file)).exists(), f"example-report: ExecStartPre did not write {option_file}, which ExecStart reads")
        notes.append("systemd example-report: ExecStartPre wrote the option file ExecStart reads")
        return "; ".join(notes)
    except Fail as e:
        raise Fail(f"{e}{logs_of(procs)}")
    finally:
        for p in procs:
            if p.p.poll() is None:
                p.stop(signal.SIGKILL, wait=5)
        if mocks:
            mocks.stop()
        shutil.rmtree(work, ignore_errors=True)


@check("systemd-example-report")
def systemd_example_report():
    e = unit_service_section(APP_UNIT)
    pre = shlex.split(unit_get(e, "ExecStartPre") or "")
    need(pre[1:3] == ["serve", "--once"], f"ExecStartPre is not s2iam serve --once: {pre}")
    need(unit_get(e, "Type") == "oneshot", "Type is not oneshot")
    cfg = tomllib.loads(APP_UNIT_CONFIG.read_text())
    rundir = "/run/" + unit_get(e, "RuntimeDirectory")
    for t in cfg.get("template", []):
        need(t["destination"].startswith(rundir + "/"), f"{t['destination']} is outside RuntimeDirectory {rundir}")
    sa = shutil.which("systemd-analyze")
    if not sa:
        return "static checks only: no systemd-analyze here"
    work = Path(tempfile.mkdtemp(prefix="s2iam-unit-"))
    try:
        unit = work / APP_UNIT.name
        text = APP_UNIT.read_text().replace("/usr/local/bin/s2iam", str(S2IAM))
        if not Path("/usr/bin/mariadb").exists():
            text = text.replace("/usr/bin/mariadb", "/bin/true")
        unit.write_text(text)
        out = subprocess.run([sa, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        need(out.returncode == 0 and not out.stderr.strip(), f"systemd-analyze verify: {out.stderr.strip()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return "ExecStartPre=s2iam serve --once writes into the job's RuntimeDirectory; systemd-analyze verify clean"


if __name__ == "__main__":
    sys.exit(main())
