# Sourced (not executable) by the attack scripts 01-06, after _mocks.sh: the
# mocks with SingleStore, `s2iam serve` with every local surface on loopback, and
# the attacker's client (_client.py) as root or as another uid.
# Nothing here reaches a non-loopback address.

client_py=$(cat "$root/scripts/attacks/_client.py")
# The system Python: a second user can run it (a pyenv shim under /root cannot).
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)

# client UID MODE ARGS...: the attacker's client as UID (0: as this shell).
client() {
  local uid=$1
  shift
  if [ "$uid" = 0 ]; then
    "$py" -c "$client_py" "$@"
  else
    setpriv --reuid="$uid" --regid="$uid" --clear-groups "$py" -c "$client_py" "$@"
  fi
}

# Whether a second user can be run here (root, setpriv, a system Python). When
# not: prints SKIP and exits 0, or FAIL under CI=true.
need_second_user() { # NAME
  if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null && [ -x /usr/bin/python3 ]; then
    return 0
  fi
  if [ "${CI:-}" = true ]; then
    echo "FAIL $1: CI=true and no second user (needs root, setpriv, /usr/bin/python3)"
    exit 1
  fi
  echo "SKIP $1: not root, or no setpriv or /usr/bin/python3: a second user cannot be run"
  exit 0
}

b64() { printf '%b' "$1" | base64 -w0; }

# The mocks: cloud, auth, Data/Management API, SingleStore (workspace group wg-1).
# Sets cloud, auth, mock_api, db_upstream.
start_all_mocks() {
  timeout --kill-after=5 120 "$testserver" --port 0 --cloud gcp --api-listen 127.0.0.1:0 \
    --singlestore-port 0 --singlestore-workspace-group wg-1 --singlestore-ca-file "$tmp/ca.pem" \
    --info-file "$tmp/ts.json" >"$tmp/testserver.log" 2>&1 &
  pids+=($!)
  wait_for 20 test -s "$tmp/ts.json" || return 1
  cloud=$(json "$tmp/ts.json" 'd["server_info"]["cloud_url"]')
  auth=$(json "$tmp/ts.json" 'd["server_info"]["endpoints"]["auth"]')
  mock_api=$(json "$tmp/ts.json" 'd["server_info"]["api_url"]')
  db_upstream=$(json "$tmp/ts.json" 'd["server_info"]["singlestore"]["addr"]')
}

# start_surfaces NAME LISTEN_EXTRA DB_EXTRA [PREFIX...]: `s2iam serve` (under
# PREFIX, e.g. `prlimit --nofile=1024:1024 --`) with the token API on a socket
# (mode 0666) and TCP (bearer token), the Data and Management API proxies and a
# database proxy, each on a free loopback port. Sets sock, tcp_port, data_port,
# mgmt_port, db_port, bearer, s2iam_pid, log.
start_surfaces() {
  local name=$1 listen_extra=$2 db_extra=$3
  shift 3
  local dir=$tmp/$name
  mkdir -p "$dir"
  chmod 755 "$tmp" "$dir"
  sock=$dir/s2iam.sock
  log=$dir/sidecar.log
  tcp_port=$(free_port)
  data_port=$(free_port)
  mgmt_port=$(free_port)
  db_port=$(free_port)
  bearer=tcp-bearer-token-0123456789
  printf '%s' "$bearer" >"$dir/tcp-token"
  cat >"$dir/s2iam.toml" <<TOML
[listen]
socket = "$sock"
socket_mode = "0666"
tcp = "127.0.0.1:$tcp_port"
tcp_token_file = "$dir/tcp-token"
$listen_extra
[auth]
server_url = "$auth"
allow_http = true
[identity]
provider = "gcp"
[[api_proxy]]
name = "data"
listen = "127.0.0.1:$data_port"
upstream = "$mock_api"
token = "database"
workspace_group_id = "wg-1"
[[api_proxy]]
name = "mgmt"
listen = "127.0.0.1:$mgmt_port"
upstream = "$mock_api"
token = "api"
[[database_proxy]]
listen = "127.0.0.1:$db_port"
upstream = "${db_upstream_override:-$db_upstream}"
server_name = "singlestore.mock"
ca_file = "$tmp/ca.pem"
workspace_group_id = "wg-1"
$db_extra
TOML
  # shellcheck disable=SC2046
  timeout --kill-after=5 120 "$@" $(mock_env "$cloud") "$s2iam" serve --config "$dir/s2iam.toml" 2>"$log" &
  local tpid=$!
  pids+=($tpid)
  wait_for 20 curl -sf --unix-socket "$sock" http://localhost/readyz || {
    echo "the sidecar did not become ready: $(tail -3 "$log" | tr '\n' ' ')"
    return 1
  }
  s2iam_pid=$(pgrep -n -f "$s2iam serve --config $dir/s2iam.toml")
}

# Stops the sidecar started last (its timeout wrapper and s2iam).
stop_surfaces() {
  [ -n "${s2iam_pid:-}" ] && kill "$s2iam_pid" 2>/dev/null
  wait_for 10 bash -c "! kill -0 $s2iam_pid 2>/dev/null"
}

# RSS of the sidecar in MiB.
rss_mib() { awk '/^VmRSS/ {printf "%d", $2 / 1024}' "/proc/$s2iam_pid/status"; }

# A coprocess holding connections: starts `client UID ARGS...` with its stdin a
# FIFO kept open, waits for its "held" line. Sets held_line; held_pids+=(pid).
held_pids=()
held_fds=()
hold_start() { # UID ARGS...
  local fifo
  fifo=$(mktemp -u "$tmp/fifo.XXXXXX")
  mkfifo "$fifo"
  local out=$fifo.out
  client "$@" <"$fifo" >"$out" 2>&1 &
  held_pids+=($!)
  pids+=($!)
  exec {fd}>"$fifo"
  held_fds+=($fd)
  wait_for 30 grep -q . "$out"
  held_line=$(head -1 "$out")
  held_out=$out
}
# Releases every held coprocess (closes their stdin) and waits for them.
hold_release() {
  for fd in "${held_fds[@]}"; do exec {fd}>&-; done
  for p in "${held_pids[@]}"; do wait "$p" 2>/dev/null; done
  held_pids=()
  held_fds=()
}

# Milliseconds since the epoch.
now_ms() { date +%s%3N; }
