"""Reference-client parity check: the reference Python client (singlestore-auth-iam
0.6.2) and our `s2iam` CLI, each against the same mock cloud on the real metadata
addresses, must get equivalent tokens with equivalent requests.

Run by scripts/check-reference-client, inside the isolated network namespace, with
the reference venv's python (it needs PyJWT, a dependency of the reference client,
to check signatures). Prints one line per check and ends with `N passed, M failed`.

For each cloud (gcp, azure, aws) one `s2iam-testserver --cloud <c>` serves the mock
cloud on 169.254.169.254:80 (and 127.0.0.1:<random>, for STS) and the mock auth
service on 127.0.0.1:<random>. Then:
  - the reference client gets a database JWT (workspace group "wg-ref") and an API
    JWT; each JWT's signature and claims are checked, and /info/requests must show
    the verified exchange that issued it;
  - our CLI does the same (`--json`), plus `s2iam detect --json`,
    `s2iam identity --json` and `s2iam doctor --json`, with no endpoint overrides but the server URL (and
    AWS_ENDPOINT_URL_STS for AWS: STS is a global service, not on the metadata
    address);
  - both clients' tokens must have the same `sub` and `provider`, and their
    requests must agree in every field the server reads.
Finally `--cloud none`: both clients must report that no provider was detected.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
S2IAM = os.path.join(ROOT, "target", "debug", "s2iam")
TESTSERVER = os.path.join(ROOT, "target", "debug", "s2iam-testserver")
REF_CLIENT = os.path.join(ROOT, "scripts", "lib", "ref_client.py")
WORKSPACE_GROUP = "wg-ref"
CLOUDS = ["gcp", "azure", "aws"]

INFO_FILE_WAIT = 15.0  # seconds for the test server to be listening
CLIENT_TIMEOUT = 30.0  # seconds for any one client process
NONE_DETECT_BOUND = 15.0  # `s2iam detect` must give up within this on no cloud
REF_NONE_BOUND = 40.0  # the reference client, which waits out its 10 s and lingers

PREFERENCE_HEADER = "x-s2iam-identity-format-preference"
CLOUD_PROVIDER_HEADER = "x-cloud-provider"


# --------------------------------------------------------------------------- output


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.failures: list[str] = []

    def check(self, ok: bool, name: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            self.failures.append(name)
        line = f"{'PASS' if ok else 'FAIL'} {name}"
        if detail:
            line += f": {detail}"
        print(line, flush=True)
        return ok

    def note(self, text: str) -> None:
        print(f"     note: {text}", flush=True)


def short(value, limit: int = 300) -> str:
    s = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return s if len(s) <= limit else s[: limit - 3] + "..."


# --------------------------------------------------------------------------- test server


def server_env() -> dict:
    """The test server's environment: ours without proxy variables. Its AWS
    verifier calls the mock STS over loopback with an HTTP client that honours
    HTTP_PROXY/ALL_PROXY, so a proxy in the caller's environment would break it."""
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}


class TestServer:
    """`s2iam-testserver --cloud <cloud>` on the metadata address; stopped on exit
    (stdin is closed and it shuts down; killed if it does not)."""

    def __init__(self, cloud: str, workdir: str):
        self.cloud = cloud
        self.dir = tempfile.mkdtemp(prefix=f"ts-{cloud}-", dir=workdir)
        self.info_path = os.path.join(self.dir, "info.json")
        self.log_path = os.path.join(self.dir, "testserver.log")
        self.proc = None
        self.info = None

    def start(self) -> None:
        args = [
            TESTSERVER,
            "--port", "0",
            "--info-file", self.info_path,
            "--shutdown-on-stdin-close",
            "--cloud", self.cloud,
            "--cloud-listen", "169.254.169.254:80",
            "--cloud-listen", "127.0.0.1:0",
        ]  # fmt: skip
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, cwd=self.dir, env=server_env()
        )
        deadline = time.monotonic() + INFO_FILE_WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"s2iam-testserver --cloud {self.cloud} exited with {self.proc.returncode}: "
                    + self.log_tail()
                )
            if os.path.exists(self.info_path):
                try:
                    with open(self.info_path) as f:
                        self.info = json.load(f)["server_info"]
                    break
                except (ValueError, KeyError):
                    pass
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(
                f"s2iam-testserver --cloud {self.cloud}: no --info-file after {INFO_FILE_WAIT:.0f}s: "
                + self.log_tail()
            )

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-800:].decode("utf-8", "replace").strip()
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=3)

    @property
    def auth_template(self) -> str:
        return self.info["endpoints"]["auth"]

    def auth_url(self, jwt_type: str) -> str:
        return self.auth_template.replace(":jwtType", jwt_type)

    @property
    def loopback_cloud_url(self) -> str:
        return next(u for u in self.info["cloud_urls"] if "127.0.0.1" in u)

    def requests(self) -> list:
        return http_json(self.info["endpoints"]["requests"])

    def cloud_requests(self) -> list:
        return http_json(self.loopback_cloud_url + "/_mock/requests")

    def public_key(self) -> str:
        with OPENER.open(self.info["endpoints"]["public_key"], timeout=5) as r:
            return r.read().decode()


# Never through a proxy from the environment: every server here is on loopback.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(url: str):
    with OPENER.open(url, timeout=5) as r:
        return json.loads(r.read())


# --------------------------------------------------------------------------- clients


def client_env(home: str, extra: dict | None = None) -> dict:
    """A clean environment: no cloud variables, proxies or credential files of the
    host (HOME is an empty directory), so detection must go through the metadata
    service and nothing else."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    env["HOME"] = home
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


class Run:
    def __init__(self, argv, code, out, err, elapsed):
        self.argv, self.code, self.out, self.err, self.elapsed = argv, code, out, err, elapsed

    def json(self):
        """The last line of stdout that parses as JSON, or the whole stdout."""
        try:
            return json.loads(self.out)
        except ValueError:
            pass
        for line in reversed(self.out.splitlines()):
            try:
                return json.loads(line)
            except ValueError:
                continue
        return None

    def describe(self) -> str:
        if self.code is None:
            return f"timed out after {self.elapsed:.1f}s"
        err = self.err.strip().splitlines()
        return f"exit {self.code}" + (f", stderr: {short(' | '.join(err[-3:]), 400)}" if err else "")


class Started:
    """A client process started in the background; finish() waits (bounded)."""

    def __init__(self, argv, env):
        self.argv = argv
        self.start = time.monotonic()
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )

    def finish(self, timeout=CLIENT_TIMEOUT) -> Run:
        left = max(0.1, timeout - (time.monotonic() - self.start))
        try:
            out, err = self.proc.communicate(timeout=left)
            return Run(self.argv, self.proc.returncode, out, err, time.monotonic() - self.start)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            return Run(self.argv, None, out or "", err or "", time.monotonic() - self.start)


def run(argv, env, timeout=CLIENT_TIMEOUT) -> Run:
    return Started(argv, env).finish(timeout)


def ref_token_argv(jwt_type: str, server: TestServer) -> list:
    argv = [sys.executable, REF_CLIENT, "token", "--jwt-type", jwt_type, "--server-url", server.auth_url(jwt_type)]
    if jwt_type == "database":
        argv += ["--workspace-group-id", WORKSPACE_GROUP]
    return argv


def ref_token(jwt_type: str, server: TestServer, env: dict) -> Run:
    return run(ref_token_argv(jwt_type, server), env)


def our_token(jwt_type: str, server: TestServer, env: dict) -> Run:
    argv = [S2IAM, "--jwt-type", jwt_type]
    if jwt_type == "database":
        argv += ["--workspace-group-id", WORKSPACE_GROUP]
    argv += ["--server-url", server.auth_template, "--allow-http", "--json"]
    return run(argv, env)


# --------------------------------------------------------------------------- JWTs and records


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


def verify_token(token: str, public_pem: str) -> tuple[dict | None, str]:
    """The claims and "" if the signature verifies, else (claims or None, why)."""
    try:
        claims = jwt_claims(token)
    except Exception as e:  # noqa: BLE001
        return None, f"not a JWT: {e}"
    try:
        import jwt as pyjwt

        pyjwt.decode(token, public_pem, algorithms=["RS256"], options={"verify_aud": False})
    except ImportError:
        return claims, ""  # no PyJWT: claims only
    except Exception as e:  # noqa: BLE001
        return claims, f"signature/expiry check failed: {e}"
    return claims, ""


def claim_problems(claims: dict, cloud: str, jwt_type: str) -> list[str]:
    problems = []
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        problems.append(f"sub is {claims.get('sub')!r}")
    if claims.get("provider") != cloud:
        problems.append(f"provider is {claims.get('provider')!r}, want {cloud!r}")
    if claims.get("jwtType") != jwt_type:
        problems.append(f"jwtType is {claims.get('jwtType')!r}, want {jwt_type!r}")
    if jwt_type == "database" and claims.get("workspaceGroupID") != WORKSPACE_GROUP:
        problems.append(f"workspaceGroupID is {claims.get('workspaceGroupID')!r}, want {WORKSPACE_GROUP!r}")
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
        problems.append(f"exp is {claims.get('exp')!r}")
    return problems


# HTTP plumbing each client library adds its own way; every other header counts.
TRANSPORT_HEADERS = {"accept", "accept-encoding", "connection", "content-length", "host", "user-agent"}


def header_names(headers: dict) -> list[str]:
    return sorted(h for h in headers if h not in TRANSPORT_HEADERS)


def other_header_values(headers: dict) -> dict:
    """Values of the non-credential headers not compared on their own."""
    skip = TRANSPORT_HEADERS | {PREFERENCE_HEADER, CLOUD_PROVIDER_HEADER}
    return {k: v for k, v in sorted(headers.items()) if k not in skip and v != "<redacted>"}


def wire_view(rec: dict) -> dict:
    """Every field of an exchange request that the server reads (or derives from
    what it reads), by name."""
    h = rec.get("headers") or {}
    ident = rec.get("identity") or {}
    return {
        "status": rec.get("status"),
        "path": rec.get("path"),
        "jwt_type": rec.get("jwt_type"),
        "workspace_group_id": rec.get("workspace_group_id"),
        "verified provider": ident.get("provider"),
        "header names": header_names(h),
        PREFERENCE_HEADER: h.get(PREFERENCE_HEADER),
        CLOUD_PROVIDER_HEADER: h.get(CLOUD_PROVIDER_HEADER),
        "other header values": other_header_values(h),
        "negotiated identity format": ident.get("identity_format"),
        "verified identifier": ident.get("identifier"),
    }


def wire_diffs(ref: dict, ours: dict) -> list[str]:
    a, b = wire_view(ref), wire_view(ours)
    return [f"{k}: reference={a[k]!r} ours={b[k]!r}" for k in a if a[k] != b[k]]


def wg_transport(rec: dict) -> str:
    where = []
    if "workspaceGroupID=" in (rec.get("query") or ""):
        where.append("query ?workspaceGroupID=")
    if isinstance(rec.get("body"), dict) and "workspace_group_id" in rec["body"]:
        where.append("body workspace_group_id")
    return " and ".join(where) or "not sent"


def informational_diffs(ref: dict, ours: dict) -> list[str]:
    """Differences the server ignores, worth knowing about."""
    notes = []
    if rec_has_wg(ref) or rec_has_wg(ours):
        a, b = wg_transport(ref), wg_transport(ours)
        if a != b:
            notes.append(f"workspace group sent in: reference={a}, ours={b}")
    ha, hb = ref.get("headers") or {}, ours.get("headers") or {}
    ba, bb = ref.get("body"), ours.get("body")
    if (ba is None) != (bb is None):
        notes.append(f"JSON body: reference={'sent' if ba is not None else 'none'}, ours={'sent' if bb is not None else 'none'}")
    elif isinstance(ba, dict) and isinstance(bb, dict):
        if ba.get("provider") != bb.get("provider"):
            notes.append(f"body.provider: reference={ba.get('provider')!r} ours={bb.get('provider')!r}")
        ia, ib = ba.get("identity") or {}, bb.get("identity") or {}
        for k in sorted(set(ia) | set(ib)):
            if ia.get(k) != ib.get(k):
                notes.append(f"body.identity.{k}: reference={short(ia.get(k), 160)} ours={short(ib.get(k), 160)}")
        extra = sorted(set(ba) ^ set(bb))
        if extra:
            notes.append(f"body keys only one client sends: {extra}")
    return notes


def cloud_call(rec: dict) -> str:
    """`METHOD path?k=v` with the query decoded and sorted (encoding differences
    are not differences), and the status."""
    q = sorted(urllib.parse.parse_qsl(rec.get("query") or "", keep_blank_values=True))
    query = "&".join(f"{k}={v}" for k, v in q)
    return f"{rec.get('method')} {rec.get('path')}{'?' + query if query else ''} -> {rec.get('status')}"


def cloud_call_diffs(ref_calls: list, our_calls: list) -> list[str]:
    """What one client asked the mock cloud (metadata, STS) and got an answer to,
    that the other did not. Failed calls (the losing detection probes, answered
    404) are left out: with concurrent probes, whether they arrive is a race."""
    a = {cloud_call(r) for r in ref_calls if (r.get("status") or 0) < 400}
    b = {cloud_call(r) for r in our_calls if (r.get("status") or 0) < 400}
    notes = []
    if a - b:
        notes.append("only the reference: " + "; ".join(sorted(a - b)))
    if b - a:
        notes.append("only ours: " + "; ".join(sorted(b - a)))
    return notes


def rec_has_wg(rec: dict) -> bool:
    return rec.get("workspace_group_id") is not None


# --------------------------------------------------------------------------- the checks


class Exchange:
    """One client's token of one type, with the record of the request that got it."""

    def __init__(self):
        self.claims = None
        self.record = None
        self.cloud_calls: list = []  # what the client asked the mock cloud


def check_exchange(report, label, server, cloud, jwt_type, result: Run, token, public_pem, before) -> Exchange:
    ex = Exchange()
    if token is None:
        report.check(False, f"{label} token", result.describe() + f" ({short(result.out, 400)})")
        return ex
    claims, why = verify_token(token, public_pem)
    problems = ([why] if why else []) + (claim_problems(claims, cloud, jwt_type) if claims else [])
    if report.check(
        not problems,
        f"{label} token",
        "; ".join(problems)
        if problems
        else f"sub={claims['sub']} provider={claims['provider']} jwtType={claims['jwtType']} "
        f"signature ok ({result.elapsed * 1000:.0f} ms)",
    ):
        ex.claims = claims
    new = server.requests()[before:]
    want_path = f"/auth/iam/{jwt_type}"
    problems = []
    if len(new) != 1:
        problems.append(f"{len(new)} exchange requests recorded, want 1")
    rec = new[-1] if new else None
    if rec is not None:
        ident = rec.get("identity") or {}
        if rec.get("status") != 200:
            problems.append(f"status {rec.get('status')} ({rec.get('error')})")
        if rec.get("path") != want_path:
            problems.append(f"path {rec.get('path')!r}, want {want_path!r}")
        if ident.get("provider") != cloud:
            problems.append(f"verified provider {ident.get('provider')!r}, want {cloud!r}")
        if claims and (rec.get("claims") or {}).get("sub") != claims.get("sub"):
            problems.append("the recorded exchange did not issue this token (sub differs)")
        if jwt_type == "database" and rec.get("workspace_group_id") != WORKSPACE_GROUP:
            problems.append(f"workspace group {rec.get('workspace_group_id')!r}, want {WORKSPACE_GROUP!r}")
        ex.record = rec
    report.check(
        not problems,
        f"{label} server verified the exchange",
        "; ".join(problems)
        if problems
        else f"{rec['method']} {rec['path']}{'?' + rec['query'] if rec.get('query') else ''} -> 200, "
        f"identity format {(rec.get('identity') or {}).get('identity_format')}",
    )
    return ex


def run_cloud(report: Report, cloud: str, workdir: str) -> None:
    server = TestServer(cloud, workdir)
    try:
        server.start()
    except Exception as e:  # noqa: BLE001
        report.check(False, f"{cloud}: start s2iam-testserver --cloud {cloud}", str(e))
        return
    try:
        home = tempfile.mkdtemp(prefix="home-", dir=workdir)
        extra = {}
        if cloud == "aws":
            # STS is a global service (sts.amazonaws.com), not on the metadata address.
            extra["AWS_ENDPOINT_URL_STS"] = server.loopback_cloud_url
        env = client_env(home, extra)
        public_pem = server.public_key()

        ref: dict[str, Exchange] = {}
        ours: dict[str, Exchange] = {}
        for jwt_type in ("database", "api"):
            before = len(server.requests())
            cloud_before = len(server.cloud_requests())
            r = ref_token(jwt_type, server, env)
            doc = r.json() or {}
            token = doc.get("jwt") if r.code == 0 and doc.get("ok") else None
            if token is None and doc.get("error"):
                r.err = f"{doc.get('error_type')}: {doc.get('error')}\n" + r.err
            ref[jwt_type] = check_exchange(
                report, f"{cloud} reference {jwt_type}", server, cloud, jwt_type, r, token, public_pem, before
            )
            ref[jwt_type].cloud_calls = server.cloud_requests()[cloud_before:]

        for jwt_type in ("database", "api"):
            before = len(server.requests())
            cloud_before = len(server.cloud_requests())
            r = our_token(jwt_type, server, env)
            doc = r.json() if r.code == 0 else None
            token = doc.get("jwt") if isinstance(doc, dict) else None
            ex = check_exchange(report, f"{cloud} ours {jwt_type}", server, cloud, jwt_type, r, token, public_pem, before)
            ex.cloud_calls = server.cloud_requests()[cloud_before:]
            ours[jwt_type] = ex
            if isinstance(doc, dict) and ex.claims:
                problems = []
                if doc.get("provider") != cloud:
                    problems.append(f"provider {doc.get('provider')!r}")
                if doc.get("sub") != ex.claims.get("sub"):
                    problems.append(f"sub {doc.get('sub')!r} is not the JWT's {ex.claims.get('sub')!r}")
                if doc.get("jwt_type") != jwt_type:
                    problems.append(f"jwt_type {doc.get('jwt_type')!r}")
                if not doc.get("expires_at"):
                    problems.append("no expires_at")
                report.check(not problems, f"{cloud} ours {jwt_type} --json fields", "; ".join(problems) or "provider, sub, jwt_type, expires_at agree with the JWT")

        # detect and identity never reach the auth service.
        before = len(server.requests())
        r = run([S2IAM, "detect", "--json"], env)
        doc = r.json() if r.code == 0 else None
        ok = isinstance(doc, dict) and doc.get("provider") == cloud and doc.get("method") == "metadata"
        report.check(ok, f"{cloud} ours detect --json", short(doc) if ok or doc else r.describe())
        r = run([S2IAM, "identity", "--json"], env)
        ident = r.json() if r.code == 0 else None
        ok = isinstance(ident, dict) and ident.get("provider") == cloud and bool(ident.get("identifier"))
        report.check(
            ok,
            f"{cloud} ours identity --json",
            f"identifier={ident.get('identifier')}" if ok else (short(ident) if ident else r.describe()),
        )
        # doctor on the real metadata addresses: nothing fails, it finds the cloud by
        # its metadata service and predicts the very sub our tokens carry.
        r = run([S2IAM, "doctor", "--json", "--server-url", server.auth_template, "--allow-http"], env)
        doc = r.json() or {}
        outcome = doc.get("outcome") or {}
        token_sub = (ours["api"].claims or {}).get("sub")
        fails = [c.get("id") for c in doc.get("checks") or [] if c.get("status") == "fail"]
        ok = (
            r.code == 0
            and doc.get("ok") is True
            and outcome.get("provider") == cloud
            and outcome.get("detected_by") == "metadata"
            and bool(token_sub)
            and outcome.get("sub") == token_sub
        )
        report.check(
            ok,
            f"{cloud} ours doctor --json",
            f"sub={outcome.get('sub')} ({outcome.get('identity_format')}), counts {doc.get('counts')}"
            if ok
            else f"exit {r.code}, failed checks {fails}, outcome {short(outcome)}, token sub {token_sub!r}; {r.describe()}",
        )
        after = server.requests()[before:]
        report.check(not after, f"{cloud} ours detect/identity/doctor sent nothing to the auth service", f"{len(after)} requests" if after else "")
        if ok:
            ref_rec = ref["database"].record or ref["api"].record
            ref_ident = ((ref_rec or {}).get("body") or {}).get("identity") or {}
            if ref_ident:
                diffs = [
                    f"{k}: reference={ref_ident.get(k)!r} ours={ident.get(k)!r}"
                    for k in ("identifier", "account_id", "region", "resource_type")
                    if ref_ident.get(k) != ident.get(k)
                ]
                if diffs:
                    report.note(f"{cloud} client-side identity (what each client puts in its request body) differs: " + "; ".join(diffs))

        # Parity: same identity in the tokens, same request on the wire.
        for jwt_type in ("database", "api"):
            a, b = ref[jwt_type], ours[jwt_type]
            name = f"{cloud} parity {jwt_type}"
            if not (a.claims and b.claims and a.record and b.record):
                report.check(False, name, "skipped comparison: a client failed above")
                continue
            diffs = [
                f"claim {k}: reference={a.claims.get(k)!r} ours={b.claims.get(k)!r}"
                for k in ("sub", "provider")
                if a.claims.get(k) != b.claims.get(k)
            ] + wire_diffs(a.record, b.record)
            report.check(
                not diffs,
                name,
                "; ".join(diffs)
                if diffs
                else f"same sub and provider; requests agree on {', '.join(k for k in wire_view(a.record))}",
            )
            for n in informational_diffs(a.record, b.record):
                report.note(f"{cloud} {jwt_type}: {n}")
        for n in cloud_call_diffs(ref["api"].cloud_calls, ours["api"].cloud_calls):
            report.note(f"{cloud} metadata/STS calls for an api token: {n}")
    finally:
        server.stop()


def run_none(report: Report, workdir: str) -> None:
    cloud = "none"
    server = TestServer(cloud, workdir)
    try:
        server.start()
    except Exception as e:  # noqa: BLE001
        report.check(False, "none: start s2iam-testserver --cloud none", str(e))
        return
    try:
        env = client_env(tempfile.mkdtemp(prefix="home-", dir=workdir))
        # The reference client waits out its whole detection timeout (10 s) here and
        # its process lingers after that, so both of its runs go in the background.
        ref_detect = Started([sys.executable, REF_CLIENT, "detect"], env)
        ref_tok = Started(ref_token_argv("api", server), env)

        r = run([S2IAM, "detect"], env, timeout=NONE_DETECT_BOUND)
        ok = r.code not in (0, None) and "no cloud provider detected" in (r.err + r.out).lower()
        report.check(
            ok,
            "none ours detect fails",
            f"exit {r.code} after {r.elapsed:.2f}s: {short(r.err.strip(), 300)}"
            if ok
            else r.describe() + f"; stdout {short(r.out, 200)!r}",
        )
        r = run([S2IAM, "--jwt-type", "api", "--server-url", server.auth_template, "--allow-http"], env, timeout=NONE_DETECT_BOUND)
        ok = r.code == 1 and "no cloud provider detected" in r.err.lower() and not r.out.strip()
        report.check(ok, "none ours token fails", f"exit {r.code} after {r.elapsed:.2f}s, nothing on stdout" if ok else r.describe())

        for name, started, want in (
            ("none reference detect raises", ref_detect, "CloudProviderNotFound"),
            ("none reference token raises", ref_tok, None),
        ):
            r = started.finish(REF_NONE_BOUND)
            doc = r.json() or {}
            ok = r.code == 1 and doc.get("ok") is False and (want is None or doc.get("error_type") == want)
            report.check(
                ok,
                name,
                f"{doc.get('error_type')} raised after {doc.get('elapsed_ms', 0) / 1000:.2f}s, "
                f"process exited after {r.elapsed:.2f}s"
                if ok
                else r.describe() + f"; {short(doc)}",
            )
        recs = server.requests()
        report.check(not recs, "none: nothing reached the auth service", f"{len(recs)} requests" if recs else "")
    finally:
        server.stop()


def main() -> int:
    missing = [p for p in (S2IAM, TESTSERVER) if not os.access(p, os.X_OK)]
    if missing:
        print(f"FAIL binaries missing: {', '.join(missing)} (run `cargo build --workspace` first)")
        print("0 passed, 1 failed")
        return 1
    report = Report()
    clouds = [c for c in os.environ.get("CHECK_CLOUDS", " ".join(CLOUDS + ["none"])).split() if c]
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="s2iam-check-ref-") as workdir:
        def on_signal(signum, _frame):
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, on_signal)
        for cloud in clouds:
            if cloud == "none":
                run_none(report, workdir)
            else:
                run_cloud(report, cloud, workdir)
    print(f"(took {time.monotonic() - start:.1f}s)")
    if report.failures:
        print("failed: " + ", ".join(report.failures))
    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
