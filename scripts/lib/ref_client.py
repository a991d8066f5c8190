"""Drive the reference Python client (singlestore-auth-iam, import name s2iam).

Run with the reference venv's python (target/ref-venv/bin/python). One call per
process, like a real application, so nothing is cached between calls:

    ref_client.py token --jwt-type database --workspace-group-id wg --server-url URL
    ref_client.py token --jwt-type api --server-url URL
    ref_client.py detect

Prints one JSON object on stdout:
    {"ok": true, "jwt": "...", "elapsed_ms": N}               (token)
    {"ok": true, "provider": "gcp", "elapsed_ms": N}          (detect)
    {"ok": false, "error_type": "CloudProviderNotFound", "error": "...", "elapsed_ms": N}
and exits 0 on success, 1 on a client error, 2 on a usage error.

The server URL is passed as is: the reference client does not expand a
`:jwtType` placeholder, so callers give it the filled-in URL.
"""

import argparse
import asyncio
import json
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(prog="ref_client.py")
    sub = parser.add_subparsers(dest="command", required=True)
    token = sub.add_parser("token", help="get a JWT with s2iam.get_jwt_database / get_jwt_api")
    token.add_argument("--jwt-type", choices=["database", "api"], required=True)
    token.add_argument("--workspace-group-id", default=None)
    token.add_argument("--server-url", required=True)
    token.add_argument("--timeout", type=float, default=10.0)
    detect = sub.add_parser("detect", help="run s2iam.detect_provider")
    detect.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()

    import s2iam  # the reference client; imported after argument parsing

    start = time.monotonic()

    async def run() -> dict:
        if args.command == "detect":
            client = await s2iam.detect_provider(timeout=args.timeout)
            return {"provider": client.get_type().value}
        if args.jwt_type == "database":
            jwt = await s2iam.get_jwt_database(
                workspace_group_id=args.workspace_group_id,
                server_url=args.server_url,
                allow_http=True,
                timeout=args.timeout,
            )
        else:
            jwt = await s2iam.get_jwt_api(
                server_url=args.server_url, allow_http=True, timeout=args.timeout
            )
        return {"jwt": jwt}

    try:
        result = asyncio.run(run())
    except Exception as e:  # noqa: BLE001 - every client error is reported, typed
        out = {
            "ok": False,
            "error_type": type(e).__name__,
            "error": str(e)[:2000],
            "elapsed_ms": int((time.monotonic() - start) * 1000),
        }
        print(json.dumps(out))
        return 1
    result.update({"ok": True, "elapsed_ms": int((time.monotonic() - start) * 1000)})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
