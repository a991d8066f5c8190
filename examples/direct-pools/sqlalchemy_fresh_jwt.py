"""A SQLAlchemy pool straight to SingleStore (no proxy): every new physical connection asks
the s2iam sidecar for the current database JWT, as the Cloud SQL connectors do.

The JWT is the password (mysql_clear_password, so TLS is required). The server checks it at
login only: an open connection outlives its token; a *new* connection needs a fresh one, so
the token is fetched in SQLAlchemy's `do_connect` hook, never once at start-up.

Settings (environment):
  S2_HOST, S2_PORT, S2_USER, S2_DATABASE   where and who ("*" on SingleStore: the JWT's user)
  S2_CA                                    CA file for the server certificate (verified)
  S2IAM_SOCKET, S2_WORKSPACE_GROUP         the sidecar's socket and whose JWT
  S2IAM_TOKEN_FILE                         or a [[token]] sink file instead of the socket
  S2_POOL_RECYCLE                          seconds before a connection is replaced (1800)

  python sqlalchemy_fresh_jwt.py                 one query
  python sqlalchemy_fresh_jwt.py --seconds 120   4 threads through the pool for that long

Tested by scripts/check-real-database against a real MariaDB server with JWT login.
"""

import http.client
import os
import socket
import sys
import threading
import time
import urllib.parse

import sqlalchemy
from sqlalchemy import event, text


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self._path)


def fresh_jwt():
    """The sidecar's current database JWT (cached and refreshed by the sidecar: cheap)."""
    token_file = os.environ.get("S2IAM_TOKEN_FILE")
    if token_file:
        with open(token_file) as f:
            return f.read().strip()
    wg = urllib.parse.quote(os.environ["S2_WORKSPACE_GROUP"])
    conn = _UnixHTTPConnection(os.environ.get("S2IAM_SOCKET", "/run/s2iam/s2iam.sock"))
    try:
        conn.request("GET", f"/v1/token/database?workspaceGroupID={wg}&format=raw")
        resp = conn.getresponse()
        body = resp.read().decode()
        if resp.status != 200:
            raise RuntimeError(f"s2iam sidecar answered {resp.status}: {body[:200]}")
        return body.strip()
    finally:
        conn.close()


def make_engine():
    user = urllib.parse.quote(os.environ.get("S2_USER", "*"), safe="")
    url = (f"mysql+pymysql://{user}@{os.environ['S2_HOST']}:{os.environ.get('S2_PORT', '3306')}"
           f"/{os.environ.get('S2_DATABASE', '')}")
    engine = sqlalchemy.create_engine(
        url,
        pool_size=4,
        pool_pre_ping=True,   # a connection the server closed is replaced, not handed out
        # Replace connections after this long (well under the server's wait_timeout); the
        # token does not need it: a session outlives its JWT.
        pool_recycle=int(os.environ.get("S2_POOL_RECYCLE", "1800")),
        connect_args={"ssl_ca": os.environ["S2_CA"], "ssl_verify_cert": True},
    )

    @event.listens_for(engine, "do_connect")
    def provide_token(dialect, conn_rec, cargs, cparams):
        cparams["password"] = fresh_jwt()

    return engine


def run(seconds):
    engine = make_engine()
    stop = time.monotonic() + seconds
    ok, failed, errors, lock = [0], [0], [], threading.Lock()

    def worker(n):
        while True:
            try:
                with engine.connect() as c:
                    assert c.execute(text("SELECT :n + 0"), {"n": n}).scalar() == n
                with lock:
                    ok[0] += 1
            except Exception as e:  # noqa: BLE001 - counted and shown
                with lock:
                    failed[0] += 1
                    errors.append(repr(e))
            if time.monotonic() >= stop:
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    print(f"SQLAlchemy pool, fresh JWT per connection: {ok[0]} queries, {failed[0]} failed "
          + "; ".join(errors[:3]))
    return failed[0] == 0 and ok[0] > 0


if __name__ == "__main__":
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] == "--seconds" else 0
    sys.exit(0 if run(seconds) else 1)
