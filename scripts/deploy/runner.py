"""The check runner scripts/deploy/check.py and scripts/deploy/inject.py share.

A check is a function registered with `@check("name")`: it returns an optional note,
raises `Fail` (or fails a `need`) to fail, `Skip` when a tool it needs is missing.
`main()` runs them in order, one line each (`ok`, `FAIL`, `SKIP`), and ends with
"N passed, M failed[, K skipped]", the line scripts/test counts. A SKIP is printed
as such (scripts/test fails a CI=true run on it) and, under CI=true, also makes the
exit status non-zero, so the script fails when run on its own in CI.
"""

import os
import time
import traceback


class Fail(Exception):
    pass


class Skip(Exception):
    pass


def need(cond, message):
    if not cond:
        raise Fail(message)


CHECKS = []


def check(name):
    def register(f):
        CHECKS.append((name, f))
        return f

    return register


def main():
    passed = failed = skipped = 0
    for name, f in CHECKS:
        started = time.monotonic()
        try:
            note = f()
            took = time.monotonic() - started
            print(f"ok    {name} ({took:.1f}s){': ' + note if note else ''}", flush=True)
            passed += 1
        except Skip as e:
            print(f"SKIP  {name}: {e}", flush=True)
            skipped += 1
        except Fail as e:
            print(f"FAIL  {name}: {e}", flush=True)
            failed += 1
        except Exception:  # a bug in a check is a failure too
            print(f"FAIL  {name}: unexpected error\n{traceback.format_exc()}", flush=True)
            failed += 1
    tail = f", {skipped} skipped" if skipped else ""
    print(f"{passed} passed, {failed} failed{tail}")
    if failed or (skipped and os.environ.get("CI") == "true"):
        return 1
    return 0
