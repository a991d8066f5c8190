# The attacker's side of scripts/attacks/01-06 (not executable: check-attacks
# does not run it). Run as `python3 -c "$(cat _client.py)" MODE ...`, so that a
# second user (setpriv --reuid 65534) needs no read access to this checkout.
# Loopback only: every TARGET is 127.0.0.1:PORT or unix:PATH.
#
#   http TARGET B64REQUEST        one request; prints the status ("closed": none)
#   mysql TARGET                  the first packet: "greeting" or "error CODE"
#   login TARGET USER [N]         N logins as USER (no password); prints
#                                 "ok K" (logged in) then the first failure
#                                 ("error CODE", "closed") or "held", holds the
#                                 sessions until stdin closes
#   hold TARGET N [B64PREFIX]     N connections (sending PREFIX, unfinished;
#                                 "head:SIZE": a request head with a SIZE-byte
#                                 header), "held N", held until stdin closes
#   bighead TARGET SIZE           a request head with a SIZE-byte header; prints
#                                 the status
#   names TARGET N SIZE           N logins with SIZE-byte user names (and one
#                                 name with a newline and an ESC); prints how
#                                 many were refused with an error packet
#   hosts TARGET N SIZE           N requests with a SIZE-byte Host header; prints
#                                 the statuses seen
#   unread TARGET N B64REQUEST    N connections each sending REQUEST and reading
#                                 nothing; "held N", held until stdin closes
#   count-listener PORTFILE       listens on 127.0.0.1:0 (port to PORTFILE),
#                                 accepts and holds, the count in PORTFILE.count;
#                                 prints the count at stdin EOF
import base64
import resource
import select
import socket
import sys
import threading

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
except ValueError:
    pass


def connect(t, blocking=True):
    if t.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr = t[5:]
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        h, p = t.rsplit(":", 1)
        addr = (h, int(p))
    if blocking:
        s.settimeout(10)
        s.connect(addr)
    else:
        s.setblocking(False)
        s.connect_ex(addr)
    return s


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        c = s.recv(n - len(data))
        if not c:
            return None
        data += c
    return data


def packet(s):
    head = recv_exact(s, 4)
    if head is None:
        return None, None
    n = int.from_bytes(head[:3], "little")
    return head[3], recv_exact(s, n)


def send_packet(s, seq, payload):
    s.sendall(len(payload).to_bytes(3, "little") + bytes([seq]) + payload)


def handshake_response(user):
    # CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH
    caps = 0x1 | 0x200 | 0x8000 | 0x80000
    return (caps.to_bytes(4, "little") + (16 << 20).to_bytes(4, "little") + bytes([45]) +
            bytes(23) + user + b"\0" + b"\0" + b"mysql_clear_password\0")


def login(target, user):
    """(socket, "ok") or (None, why)."""
    try:
        s = connect(target)
        seq, greeting = packet(s)
        if greeting is None:
            return None, "closed"
        if greeting[:1] == b"\xff":
            return None, "error %d" % int.from_bytes(greeting[1:3], "little")
        send_packet(s, 1, handshake_response(user))
        while True:
            seq, answer = packet(s)
            if answer is None:
                return None, "closed"
            if answer[:1] == b"\x00":
                return s, "ok"
            if answer[:1] == b"\xff":
                return None, "error %d" % int.from_bytes(answer[1:3], "little")
            if answer[:1] in (b"\xfe", b"\x01"):
                send_packet(s, (seq + 1) % 256, b"\0")
                continue
            return None, "other"
    except OSError as e:
        return None, "oserror " + type(e).__name__


def status_of(s):
    """The answer's status code, or `closed:WHY:NB` (how the read ended, and the
    bytes read before) when no status line came."""
    data = b""
    try:
        while b"\r\n" not in data:
            c = s.recv(4096)
            if not c:
                break
            data += c
    except OSError as e:
        return "closed:%s:%dB" % (type(e).__name__, len(data))
    return data.split(b" ")[1].decode() if data.startswith(b"HTTP/") else "closed:eof:%dB" % len(data)


def wait_stdin():
    sys.stdin.read()


mode, target = sys.argv[1], sys.argv[2]
try:
    if mode == "http":
        s = connect(target)
        s.sendall(base64.b64decode(sys.argv[3]))
        print(status_of(s))
    elif mode == "mysql":
        s = connect(target)
        _, body = packet(s)
        if body is None:
            print("closed")
        elif body[:1] == b"\x0a":
            print("greeting")
        elif body[:1] == b"\xff":
            print("error", int.from_bytes(body[1:3], "little"))
        else:
            print("other")
    elif mode == "login":
        n = int(sys.argv[4]) if len(sys.argv) > 4 else 1
        held, last = [], "held"
        for _ in range(n):
            s, why = login(target, sys.argv[3].encode())
            if s is None:
                last = why
                break
            held.append(s)
        print("ok", len(held), flush=True)
        print(last, flush=True)
        wait_stdin()
    elif mode == "hold":
        n = int(sys.argv[3])
        prefix = b""
        if len(sys.argv) > 4 and sys.argv[4].startswith("head:"):
            prefix = b"GET /api/v2/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"p" * int(sys.argv[4][5:])
        elif len(sys.argv) > 4:
            prefix = base64.b64decode(sys.argv[4])
        held = []
        for _ in range(n):
            held.append(connect(target, blocking=False))
        if prefix:
            pending = list(held)
            # Send what each socket takes without waiting, a few rounds.
            for _ in range(20):
                _, writable, _ = select.select([], pending[:1000], [], 0.2)
                for s in writable:
                    try:
                        s.send(prefix)
                    except OSError:
                        pass
                if not writable:
                    break
        print("held", len(held), flush=True)
        wait_stdin()
    elif mode == "unread":
        n = int(sys.argv[3])
        request = base64.b64decode(sys.argv[4])
        held = []
        for _ in range(n):
            s = connect(target)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(request)
            held.append(s)
        print("held", len(held), flush=True)
        wait_stdin()
    elif mode == "bighead":
        s = connect(target)
        head = b"GET /api/v2/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"p" * int(sys.argv[3]) + b"\r\n\r\n"
        sent = ""
        try:
            s.sendall(head)
        except OSError as e:
            sent = "/send:" + type(e).__name__
        st = status_of(s)
        # How sending ended says more only when no status came.
        print(st + sent if st.startswith("closed") else st)
    elif mode == "names":
        n, size = int(sys.argv[3]), int(sys.argv[4])
        refused = 0
        names = [b"u" * size] * n + [b"x\n2026-12-07T00:00:00Z  INFO forged line\x1b[31m"]
        for name in names:
            s, why = login(target, name)
            if s is None and why.startswith("error"):
                refused += 1
            elif s is None and why in ("closed", "oserror ConnectionResetError", "oserror BrokenPipeError"):
                refused += 1
        print(refused)
    elif mode == "hosts":
        n, size = int(sys.argv[3]), int(sys.argv[4])
        seen = {}
        host = "evil" + "h" * size
        for _ in range(n):
            st = "closed"
            try:
                s = connect(target)
                try:
                    s.sendall(("GET /v1/workspaceGroups HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode())
                except OSError:
                    pass
                st = status_of(s)
                s.close()
            except OSError:
                pass
            seen[st] = seen.get(st, 0) + 1
        print(" ".join("%s:%d" % kv for kv in sorted(seen.items())))
    elif mode == "count-listener":
        l = socket.socket()
        l.bind(("127.0.0.1", 0))
        l.listen(4096)
        open(target + ".count", "w").write("0")
        open(target, "w").write(str(l.getsockname()[1]))
        held = []

        def accept():
            while True:
                try:
                    c, _ = l.accept()
                except OSError:
                    return
                held.append(c)
                open(target + ".count", "w").write(str(len(held)))
        threading.Thread(target=accept, daemon=True).start()
        print("listening", flush=True)
        wait_stdin()
        print(len(held))
    else:
        print("unknown mode", mode)
except Exception as e:  # one line, whatever happened
    print("error:", type(e).__name__, e, flush=True)
