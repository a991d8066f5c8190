"""Cold-start benchmark: `s2iam --jwt-type api` vs the reference Python client doing
the same call (s2iam.get_jwt_api), each a fresh process, interleaved in one run
against one s2iam-testserver (GCP cloud on 169.254.169.254:80).

Run by scripts/bench-cli-vs-reference inside the isolated network namespace, with
the reference venv's python. Environment:
  BENCH_RUNS   timed runs of each client (default 20)
  BENCH_OUT    JSON result path (default target/bench/cli-vs-reference.json)

Measures, per run, process start -> token line on stdout ("token"), and process
start -> exit ("exit"). One untimed warm-up run of each client comes first (page
cache, Python bytecode). Runs alternate which client goes first.
"""

import json
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RUN_TIMEOUT = 30.0
INFO_FILE_WAIT = 15.0

REF_SNIPPET = (
    "import asyncio, sys, s2iam\n"
    "print(asyncio.run(s2iam.get_jwt_api(server_url=sys.argv[1], allow_http=True)), flush=True)\n"
)


def pick_binary(name: str) -> tuple[str, str]:
    for profile in ("release", "debug"):
        path = os.path.join(ROOT, "target", profile, name)
        if os.access(path, os.X_OK):
            return path, profile
    raise SystemExit(f"error: target/release/{name} and target/debug/{name} are missing: run `cargo build --workspace` first")


def server_env() -> dict:
    """The test server's environment: ours without proxy variables. Its AWS
    verifier calls the mock STS over loopback with an HTTP client that honours
    HTTP_PROXY/ALL_PROXY, so a proxy in the caller's environment would break it."""
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}


def start_testserver(testserver: str, workdir: str):
    info_path = os.path.join(workdir, "info.json")
    log = open(os.path.join(workdir, "testserver.log"), "wb")
    proc = subprocess.Popen(
        [
            testserver, "--port", "0", "--info-file", info_path, "--shutdown-on-stdin-close",
            "--cloud", "gcp", "--cloud-listen", "169.254.169.254:80",
        ],  # fmt: skip
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, env=server_env(),
    )  # fmt: skip
    deadline = time.monotonic() + INFO_FILE_WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: s2iam-testserver exited with {proc.returncode}; see {log.name}")
        try:
            with open(info_path) as f:
                return proc, json.load(f)["server_info"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"error: s2iam-testserver wrote no --info-file within {INFO_FILE_WAIT:.0f}s")


def stop(proc) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.stdin.close()
        proc.wait(timeout=3)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait(timeout=3)


def timed_run(argv: list, env: dict) -> tuple[float, float]:
    """(seconds to the token line on stdout, seconds to exit). Raises on failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    fd = proc.stdout.fileno()
    buf = b""
    t_token = None
    deadline = start + RUN_TIMEOUT
    try:
        while t_token is None:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise RuntimeError(f"no token within {RUN_TIMEOUT:.0f}s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            if b"\n" in buf:
                t_token = time.perf_counter() - start
        rest, err = proc.communicate(timeout=max(0.1, deadline - time.perf_counter()))
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    t_exit = time.perf_counter() - start
    line = (buf + rest).split(b"\n", 1)[0].strip()
    if proc.returncode != 0 or t_token is None or line.count(b".") != 2:
        raise RuntimeError(
            f"{os.path.basename(argv[0])} failed: exit {proc.returncode}, stdout {line[:80]!r}, "
            f"stderr {err.decode('utf-8', 'replace').strip()[-300:]!r}"
        )
    return t_token, t_exit


def percentile(values: list, p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def median(values: list) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def stats(samples: list) -> dict:
    ms = [round(x * 1000, 3) for x in samples]
    return {
        "median_ms": round(median(ms), 2),
        "p90_ms": round(percentile(ms, 90), 2),
        "min_ms": round(min(ms), 2),
        "max_ms": round(max(ms), 2),
        "samples_ms": ms,
    }


def main() -> int:
    runs = int(os.environ.get("BENCH_RUNS", "20"))
    if runs < 1:
        raise SystemExit("error: BENCH_RUNS must be at least 1")
    out_path = os.environ.get("BENCH_OUT") or os.path.join(ROOT, "target", "bench", "cli-vs-reference.json")
    s2iam, profile = pick_binary("s2iam")
    testserver, ts_profile = pick_binary("s2iam-testserver")
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(s2iam)))
    print(f"s2iam binary: target/{profile}/s2iam ({profile} build, built {built}"
          + ("; target/release/s2iam does not exist" if profile == "debug" else "") + ")")
    print(f"reference: singlestore-auth-iam via {sys.executable} (python {platform.python_version()})")
    print(f"test server: target/{ts_profile}/s2iam-testserver --cloud gcp on 169.254.169.254:80; {runs} runs each, interleaved")

    with tempfile.TemporaryDirectory(prefix="s2iam-bench-") as workdir:
        home = os.path.join(workdir, "home")
        os.mkdir(home)
        # No cloud variables, proxies or credential files: detection goes through the
        # metadata service, as on a real VM.
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        env["HOME"] = home
        proc, info = start_testserver(testserver, workdir)
        try:
            template = info["endpoints"]["auth"]
            ours = [s2iam, "--jwt-type", "api", "--server-url", template, "--allow-http"]
            ref = [sys.executable, "-c", REF_SNIPPET, template.replace(":jwtType", "api")]
            timed_run(ours, env)  # warm-up, untimed
            timed_run(ref, env)
            samples = {"ours": ([], []), "reference": ([], [])}
            for i in range(runs):
                order = (("ours", ours), ("reference", ref)) if i % 2 == 0 else (("reference", ref), ("ours", ours))
                for name, argv in order:
                    t_token, t_exit = timed_run(argv, env)
                    samples[name][0].append(t_token)
                    samples[name][1].append(t_exit)
            # Never through a proxy from the environment: the server is on loopback.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(info["endpoints"]["requests"], timeout=5) as resp:
                requests = json.loads(resp.read())
        finally:
            stop(proc)

    ok_exchanges = sum(1 for r in requests if r.get("status") == 200)
    want = 2 * (runs + 1)
    result = {
        "benchmark": "cold CLI api token: s2iam vs reference Python client (get_jwt_api)",
        "cloud": "gcp (mock, on 169.254.169.254:80, isolated network namespace)",
        "runs": runs,
        "binary": f"target/{profile}/s2iam",
        "binary_built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(s2iam))),
        "profile": profile,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ours": {"token": stats(samples["ours"][0]), "exit": stats(samples["ours"][1])},
        "reference": {"token": stats(samples["reference"][0]), "exit": stats(samples["reference"][1])},
        "verified_exchanges": ok_exchanges,
    }
    o, r = result["ours"]["token"], result["reference"]["token"]
    result["ratio_reference_over_ours"] = {
        "median": round(r["median_ms"] / o["median_ms"], 2),
        "p90": round(r["p90_ms"] / o["p90_ms"], 2),
    }
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    print()
    print(f"{'process start -> token printed':34} {'median':>10} {'p90':>10} {'min':>10} {'max':>10}")
    for name in ("ours", "reference"):
        t = result[name]["token"]
        label = f"s2iam ({profile})" if name == "ours" else "reference (python)"
        print(f"  {label:32} {t['median_ms']:8.1f}ms {t['p90_ms']:8.1f}ms {t['min_ms']:8.1f}ms {t['max_ms']:8.1f}ms")
    for name in ("ours", "reference"):
        t = result[name]["exit"]
        label = ("s2iam" if name == "ours" else "reference") + " (to exit)"
        print(f"  {label:32} {t['median_ms']:8.1f}ms {t['p90_ms']:8.1f}ms {t['min_ms']:8.1f}ms {t['max_ms']:8.1f}ms")
    ratio = result["ratio_reference_over_ours"]
    print(f"ratio reference/ours (token printed): median {ratio['median']}x, p90 {ratio['p90']}x")
    print(f"verified exchanges at the mock auth service: {ok_exchanges} (want {want})")
    shown = os.path.abspath(out_path)
    if shown.startswith(ROOT + os.sep):
        shown = os.path.relpath(shown, ROOT)
    print(f"wrote {shown}")
    if ok_exchanges != want:
        print(f"error: {ok_exchanges} verified exchanges, want {want}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
