"""Python drivers against the real MariaDB, through the proxy and directly.

Run by scripts/check-real-database with the S2IAM_REALDB_* variables set:

    drivers.py check            one line per driver and case: "ok   NAME" / "FAIL NAME: why"
    drivers.py pool SECONDS     SQLAlchemy pools (pool_pre_ping, pool_recycle) through the proxy,
                                queries from 4 threads; "ok   ..." with the count, or FAIL
    drivers.py bench            scripts/bench-real-database: per driver, connection setup, SELECT 1
                                round trip and a large result, through the proxy and direct; one
                                JSON line each (see bench())

Settings through the proxy: PyMySQL and singlestoredb get ssl_disabled=True. Without any TLS
setting PyMySQL builds a default TLS context from the system's CA store on every connection
(about 20 ms) in case the server offers TLS; the proxy never does (it listens on loopback or a
Unix socket), so that work is wasted.
"""

import os
import sys
import threading
import time

import pymysql

PROXY_PORT = int(os.environ["S2IAM_REALDB_PROXY_PORT"])
DB_PORT = int(os.environ["S2IAM_REALDB_PORT"])
# scripts/bench-real-database: a plain TCP forwarder to the server (the "hop" side: the direct
# connection with one more process on its path and no protocol work in it).
HOP_PORT = int(os.environ.get("S2IAM_REALDB_HOP_PORT") or 0)
CA = os.environ["S2IAM_REALDB_CA"]
USER = os.environ["S2IAM_REALDB_USER"]
TOKEN_FILE = os.environ["S2IAM_REALDB_TOKEN_FILE"]
EXPECTED = USER + "@%"


def jwt():
    with open(TOKEN_FILE) as f:
        return f.read().strip()


def pymysql_proxy(**kw):
    return pymysql.connect(host="127.0.0.1", port=PROXY_PORT, user=USER, database="app",
                           ssl_disabled=True, **kw)


def pymysql_direct(port=DB_PORT, **kw):
    return pymysql.connect(host="127.0.0.1", port=port, user=USER, password=jwt(),
                           database="app", ssl_ca=CA, ssl_verify_cert=True, **kw)


def check(name, fn):
    try:
        fn()
        print("ok   " + name, flush=True)
    except Exception as e:  # noqa: BLE001 - report and go on
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)


def basic(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        got = cur.fetchone()[0]
        assert got == EXPECTED, got
        cur.execute("SELECT id, payload FROM big")
        assert len(cur.fetchall()) == 20000
        # Multi-statement needs the flag; one statement here.
        cur.execute("SELECT SUM(id) FROM big WHERE id <= %s", (10,))
        assert cur.fetchone()[0] == 55
    conn.close()


def multi(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT 1; SELECT 2, 3")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == ((2, 3),)
        assert not cur.nextset()
    conn.close()


def local_infile(conn):
    path = os.path.join(os.environ["S2IAM_REALDB_TMP"], "py-infile.csv")
    with open(path, "w") as f:
        for i in range(10000):
            f.write(f"{i},py {i}\n")
    with conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE t (id INT, name VARCHAR(40))")
        cur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE t FIELDS TERMINATED BY ','")
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone()[0] == 10000
    conn.close()


def change_user(conn):
    conn.select_db("app")
    with conn.cursor() as cur:
        cur.execute("SET @x = 1")
    # PyMySQL has no change_user(); send COM_CHANGE_USER by hand with a password that
    # must never reach the server, and read the reply the proxy gives.
    import struct
    payload = b"\x11" + USER.encode() + b"\0" + bytes([5]) + b"pwned" + b"app\0" + struct.pack("<H", 45)
    payload += b"mysql_native_password\0"
    conn._next_seq_id = 0
    conn.write_packet(payload)
    pkt = conn._read_packet()
    assert pkt.is_ok_packet(), pkt
    with conn.cursor() as cur:
        cur.execute("SELECT @x, CURRENT_USER()")
        assert cur.fetchone() == (None, EXPECTED)
    conn.close()


def sleep_in_thread(conn, seconds):
    """Runs SELECT SLEEP(seconds) on conn in a thread: (thread, result dict)."""
    result = {}

    def run():
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT SLEEP({seconds})")
                result["value"] = cur.fetchone()[0]
        except Exception as e:  # noqa: BLE001 - checked by the caller
            result["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, result


def kill_by_thread_id():
    """thread_id() is the greeting's connection id: through the proxy, the proxy's own id
    for the session (the proxy greets before it opens anything upstream). KILL QUERY with it
    from a second connection interrupts the query, and the session goes on; kill() (KILL
    CONNECTION) with another connection's thread_id() ends that connection."""
    sleeper = pymysql_proxy()
    tid = sleeper.thread_id()
    assert tid >= 1_000_000_000, tid
    started = time.monotonic()
    t, result = sleep_in_thread(sleeper, 30)
    time.sleep(0.5)
    killer = pymysql_proxy()
    with killer.cursor() as cur:
        cur.execute(f"KILL QUERY {tid}")
    t.join(20)
    took = time.monotonic() - started
    assert not t.is_alive() and took < 20, f"SLEEP(30) not interrupted after {took:.1f}s"
    if "error" in result:  # 1317: query execution was interrupted
        assert result["error"].args[0] == 1317, result["error"]
    else:  # MariaDB: an interrupted SLEEP returns 1
        assert result["value"] == 1, result
    with sleeper.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone()[0] == 1
    sleeper.close()

    victim = pymysql_proxy()
    killer.kill(victim.thread_id())
    deadline = time.monotonic() + 10
    while True:
        try:
            victim.ping(reconnect=False)
        except pymysql.err.Error:
            break
        assert time.monotonic() < deadline, "the killed connection still answers"
        time.sleep(0.1)
    killer.close()


def quick():
    check("PyMySQL through the proxy (ssl_disabled=True): user, 20000 rows, parameters",
          lambda: basic(pymysql_proxy()))
    check("PyMySQL straight to MariaDB with the JWT over verified TLS", lambda: basic(pymysql_direct()))
    check("PyMySQL through the proxy: multi-statements, two result sets",
          lambda: multi(pymysql_proxy(client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)))
    check("PyMySQL through the proxy: LOAD DATA LOCAL INFILE",
          lambda: local_infile(pymysql_proxy(local_infile=True)))
    check("PyMySQL through the proxy: COM_CHANGE_USER answered, password not forwarded",
          lambda: change_user(pymysql_proxy()))
    check("PyMySQL through the proxy: KILL QUERY and kill() by thread_id(), the greeting's id, "
          "from a second connection", kill_by_thread_id)

    import singlestoredb
    check("singlestoredb through the proxy",
          lambda: basic(singlestoredb.connect(host="127.0.0.1", port=PROXY_PORT, user=USER,
                                              password="", database="app", ssl_disabled=True)))
    check("singlestoredb straight to MariaDB with the JWT over verified TLS",
          lambda: basic(singlestoredb.connect(host="127.0.0.1", port=DB_PORT, user=USER,
                                              password=jwt(), database="app", ssl_ca=CA,
                                              ssl_verify_cert=True)))

    import sqlalchemy
    from sqlalchemy import text

    def sa(url, **kw):
        engine = sqlalchemy.create_engine(url, pool_size=2, pool_pre_ping=True, pool_recycle=20, **kw)
        with engine.connect() as c:
            assert c.execute(text("SELECT CURRENT_USER()")).scalar() == EXPECTED
            assert c.execute(text("SELECT COUNT(*) FROM big")).scalar() == 20000
        engine.dispose()

    check("SQLAlchemy (pymysql) through the proxy",
          lambda: sa(f"mysql+pymysql://{USER}@127.0.0.1:{PROXY_PORT}/app",
                     connect_args={"ssl_disabled": True}))

    def sa_direct():
        engine = sqlalchemy.create_engine(
            f"mysql+pymysql://{USER}@127.0.0.1:{DB_PORT}/app", pool_pre_ping=True,
            connect_args={"ssl_ca": CA, "ssl_verify_cert": True})

        @sqlalchemy.event.listens_for(engine, "do_connect")
        def fresh_token(dialect, conn_rec, cargs, cparams):
            cparams["password"] = jwt()

        with engine.connect() as c:
            assert c.execute(text("SELECT CURRENT_USER()")).scalar() == EXPECTED
        engine.dispose()

    check("SQLAlchemy (pymysql) straight to MariaDB, a fresh JWT per connection (do_connect)", sa_direct)


def pool_lifetime(seconds):
    """A SQLAlchemy pool (pool_pre_ping, no pool_recycle) through a proxy with
    max_session_lifetime = 2s: the proxy closes idle pooled connections, the
    pre-ping notices, the pool reconnects; zero failed queries."""
    import random
    import sqlalchemy
    from sqlalchemy import event, text

    port = int(os.environ["S2IAM_REALDB_LIFETIME_PROXY_PORT"])
    engine = sqlalchemy.create_engine(
        f"mysql+pymysql://{USER}@127.0.0.1:{port}/app",
        pool_size=2, max_overflow=0, pool_pre_ping=True,
        connect_args={"ssl_disabled": True})
    physical = {"n": 0}

    @event.listens_for(engine, "connect")
    def on_connect(_dbapi, _record):
        physical["n"] += 1

    stop = time.monotonic() + seconds
    counts = {"ok": 0, "failed": 0}
    errors = []
    lock = threading.Lock()

    def worker(n):
        rnd = random.Random(n)
        while time.monotonic() < stop:
            try:
                with engine.connect() as c:
                    got = c.execute(text("SELECT :n + 0"), {"n": n}).scalar()
                    assert got == n, got
                with lock:
                    counts["ok"] += 1
            except Exception as e:  # noqa: BLE001 - counted
                with lock:
                    counts["failed"] += 1
                    errors.append(f"{type(e).__name__}: {e}")
            time.sleep(rnd.uniform(0.0, 4.0))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    line = (f"SQLAlchemy pool (pool_pre_ping) through a proxy with max_session_lifetime=2s, "
            f"{seconds}s: {counts['ok']} queries, {counts['failed']} failed, "
            f"{physical['n']} physical connections")
    # More connections than the pool holds: the proxy closed some, and the pool
    # noticed before a query failed.
    if counts["failed"] == 0 and counts["ok"] > 0 and physical["n"] > 2:
        print("ok   " + line)
    else:
        print("FAIL " + line + ": " + "; ".join(errors[:3]))


def pool(seconds):
    """SQLAlchemy pools through the proxy while tokens expire: zero failed queries."""
    import sqlalchemy
    from sqlalchemy import text

    engine = sqlalchemy.create_engine(
        f"mysql+pymysql://{USER}@127.0.0.1:{PROXY_PORT}/app",
        pool_size=3, max_overflow=2, pool_pre_ping=True, pool_recycle=15,
        connect_args={"ssl_disabled": True})
    stop = time.monotonic() + seconds
    counts = {"ok": 0, "failed": 0}
    errors = []
    lock = threading.Lock()

    def worker(n):
        while time.monotonic() < stop:
            try:
                with engine.connect() as c:
                    got = c.execute(text("SELECT :n + 0"), {"n": n}).scalar()
                    assert got == n, got
                with lock:
                    counts["ok"] += 1
            except Exception as e:  # noqa: BLE001 - counted
                with lock:
                    counts["failed"] += 1
                    errors.append(f"{type(e).__name__}: {e}")
            time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    line = (f"SQLAlchemy pool through the proxy (pool_pre_ping, pool_recycle=15s), {seconds}s on "
            f"30s tokens: {counts['ok']} queries, {counts['failed']} failed")
    if counts["failed"] == 0 and counts["ok"] > 0:
        print("ok   " + line)
    else:
        print("FAIL " + line + ": " + "; ".join(errors[:3]))


# ---- scripts/bench-real-database --------------------------------------------------------------
STREAM = "SELECT id, payload FROM stream"


def p50(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def interleaved(n, sides, fn):
    """fn(side) timed n times per side, the sides alternating (and their order too)."""
    out = {side: [] for side in sides}
    for i in range(n):
        for side in (sides if i % 2 == 0 else sides[::-1]):
            t = time.perf_counter()
            fn(side)
            out[side].append(time.perf_counter() - t)
    return out


def open_sides(hop=True):
    """Round trip and streaming: through the proxy, direct, and (when the bench runs the
    plain forwarder and the driver has a hop side) direct through it."""
    return ["proxy", "direct"] + (["hop"] if HOP_PORT and hop else [])


def bench_one(driver, settings, connect, query, n_setup, n_rtt, n_stream, report_rtt=True):
    """connect[side]() opens a connection; query(conn, sql) runs it and reads every row.
    Setup is measured through the proxy and direct; round trip and streaming also through
    the hop (see open_sides)."""
    import json

    sides = ["proxy", "direct"]

    def setup(side):
        c = connect[side]()
        query(c, "SELECT 1")
        c.close()

    result = {"driver": driver, "settings": settings}
    s = interleaved(n_setup, sides, setup)
    result["setup_ms"] = {k: round(p50(v) * 1e3, 3) for k, v in s.items()}
    if report_rtt:
        sides = open_sides("hop" in connect)
        conns = {side: connect[side]() for side in sides}
        for side in sides:  # warm
            for _ in range(50):
                query(conns[side], "SELECT 1")
        r = interleaved(n_rtt, sides, lambda side: query(conns[side], "SELECT 1"))
        result["rtt_us"] = {k: round(p50(v) * 1e6, 1) for k, v in r.items()}
        st = interleaved(n_stream, sides, lambda side: query(conns[side], STREAM))
        result["stream_s"] = {k: round(p50(v), 4) for k, v in st.items()}
        for c in conns.values():
            c.close()
    print(json.dumps(result), flush=True)


def bench():
    n_setup = int(os.environ.get("S2IAM_BENCH_SETUP", "40"))
    n_rtt = int(os.environ.get("S2IAM_BENCH_RTT", "2000"))
    n_stream = int(os.environ.get("S2IAM_BENCH_STREAM", "5"))

    def dbapi_query(c, sql):
        with c.cursor() as cur:
            cur.execute(sql)
            cur.fetchall()

    bench_one("PyMySQL 1.2.4", "ssl_disabled=True",
              {"proxy": pymysql_proxy, "direct": pymysql_direct, "hop": lambda: pymysql_direct(port=HOP_PORT)},
              dbapi_query, n_setup, n_rtt, n_stream)
    bench_one("PyMySQL 1.2.4", "default settings (no TLS option)",
              {"proxy": lambda: pymysql.connect(host="127.0.0.1", port=PROXY_PORT, user=USER, database="app"),
               "direct": pymysql_direct}, dbapi_query, max(10, n_setup // 2), 0, 0, report_rtt=False)

    import singlestoredb

    def s2_direct(port=DB_PORT):
        return singlestoredb.connect(host="127.0.0.1", port=port, user=USER, password=jwt(), database="app",
                                     ssl_ca=CA, ssl_verify_cert=True)
    bench_one("singlestoredb 1.18.1", "ssl_disabled=True",
              {"proxy": lambda: singlestoredb.connect(host="127.0.0.1", port=PROXY_PORT, user=USER, password="",
                                                      database="app", ssl_disabled=True),
               "direct": s2_direct, "hop": lambda: s2_direct(HOP_PORT)},
              dbapi_query, n_setup, n_rtt, n_stream)
    bench_one("singlestoredb 1.18.1", "default settings (no TLS option)",
              {"proxy": lambda: singlestoredb.connect(host="127.0.0.1", port=PROXY_PORT, user=USER, password="",
                                                      database="app"),
               "direct": lambda: singlestoredb.connect(host="127.0.0.1", port=DB_PORT, user=USER, password=jwt(),
                                                       database="app", ssl_ca=CA, ssl_verify_cert=True)},
              dbapi_query, max(10, n_setup // 2), 0, 0, report_rtt=False)

    import sqlalchemy
    from sqlalchemy import text
    from sqlalchemy.pool import NullPool

    def engine(side, **kw):
        if side == "proxy":
            e = sqlalchemy.create_engine(f"mysql+pymysql://{USER}@127.0.0.1:{PROXY_PORT}/app",
                                         connect_args={"ssl_disabled": True}, **kw)
        else:
            port = HOP_PORT if side == "hop" else DB_PORT
            e = sqlalchemy.create_engine(f"mysql+pymysql://{USER}@127.0.0.1:{port}/app",
                                         connect_args={"ssl_ca": CA, "ssl_verify_cert": True}, **kw)

            @sqlalchemy.event.listens_for(e, "do_connect")
            def fresh_token(dialect, conn_rec, cargs, cparams):
                cparams["password"] = jwt()
        return e

    # Setup: a new physical connection each time (NullPool); round trip and streaming: a
    # checkout from a warm pool (pool_pre_ping, reset on return), the query, the checkin.
    fresh = {side: engine(side, poolclass=NullPool) for side in ("proxy", "direct")}
    sides = open_sides()
    pooled = {side: engine(side, pool_size=1, pool_pre_ping=True, pool_recycle=1800) for side in sides}

    class Checkout:
        def __init__(self, e):
            self.e = e

        def close(self):
            pass

    def sa_query(c, sql):
        if isinstance(c, Checkout):
            with c.e.connect() as conn:
                conn.execute(text(sql)).fetchall()
        else:
            c.execute(text(sql)).fetchall()

    bench_one("SQLAlchemy 2.0.44 (pymysql) pool", "connect_args={'ssl_disabled': True}, pool_pre_ping=True",
              {"proxy": lambda: fresh["proxy"].connect(), "direct": lambda: fresh["direct"].connect()},
              sa_query, n_setup, 0, 0, report_rtt=False)
    import json
    # Round trip and streaming on an open connection: one checked out of a warm pool and
    # held, as the other drivers' open connections.
    held = {side: pooled[side].connect() for side in sides}
    for side in sides:
        for _ in range(50):
            sa_query(held[side], "SELECT 1")
    r = interleaved(n_rtt, sides, lambda side: sa_query(held[side], "SELECT 1"))
    st = interleaved(n_stream, sides, lambda side: sa_query(held[side], STREAM))
    print(json.dumps({"driver": "SQLAlchemy 2.0.44 (pymysql) pool", "part": "open connection",
                      "rtt_us": {k: round(p50(v) * 1e6, 1) for k, v in r.items()},
                      "stream_s": {k: round(p50(v), 4) for k, v in st.items()}}), flush=True)
    for c in held.values():
        c.close()
    # A whole checkout (pool_pre_ping's COM_PING, the query, the rollback on return: three
    # round trips), and the same without pool_pre_ping (two).
    cos = {side: Checkout(pooled[side]) for side in sides}
    bare = {side: Checkout(engine(side, pool_size=1, pool_pre_ping=False, pool_recycle=1800)) for side in sides}
    for label, pool, trips in (("pool_pre_ping=True", cos, 3), ("pool_pre_ping=False", bare, 2)):
        for side in sides:
            for _ in range(20):
                sa_query(pool[side], "SELECT 1")
        r = interleaved(n_rtt // 2, sides, lambda side: sa_query(pool[side], "SELECT 1"))
        print(json.dumps({"driver": "SQLAlchemy 2.0.44 (pymysql) pool",
                          "settings": f"a checkout with SELECT 1, {label}",
                          "rtt_kind": f"whole checkout: {trips} round trips",
                          "round_trips": trips,
                          "rtt_us": {k: round(p50(v) * 1e6, 1) for k, v in r.items()}}), flush=True)
    for c in list(cos.values()) + list(bare.values()):
        c.e.dispose()


if __name__ == "__main__":
    if sys.argv[1] == "check":
        quick()
    elif sys.argv[1] == "pool":
        pool(int(sys.argv[2]))
    elif sys.argv[1] == "pool-lifetime":
        pool_lifetime(int(sys.argv[2]))
    elif sys.argv[1] == "bench":
        bench()
