# A real MariaDB server for the checks (sourced by scripts/check-real-database,
# scripts/bench and scripts/attacks/09-change-user): Debian's mariadbd in a
# temporary data directory, on 127.0.0.1 only, with TLS from a CA generated here,
# and one user who logs in with a database JWT over mysql_clear_password, as
# SingleStore's JWT login works: auth_pam (pam_use_cleartext_plugin=ON) → our
# PAM module (scripts/lib/realdb/pam_s2iam_jwt.c, built by
# scripts/setup-real-database) → s2iam-jwt-check (RS256 against the mock auth
# service's JWKS, exp, workspace group, user).
#
#   realdb_start DIR JWKS_FILE WORKSPACE_GROUP USER   → sets REALDB_PORT, REALDB_CA,
#                                                       REALDB_SOCK, REALDB_SERVER_NAME
#   realdb_sql SQL...                                 → runs SQL as root (Unix socket)
#   realdb_stop                                       → stops the server it started,
#                                                       removes its PAM service file
#                                                       (and the world's processes)
#   realdb_java_classes                               → compiles the Java drivers and the
#       HikariCP example once (javac, into target/realdb/java, again only when a source
#       changes) and prints the classpath to run them with
#   realdb_world DIR S2IAM TESTSERVER TOKEN_EXPIRY    → the whole test world: the mocks
#       (cloud + auth service), MariaDB, and `s2iam serve` with the token API on a socket,
#       a [[token]] sink file and two database proxies (one whose workspace group the
#       server refuses); exports S2IAM_REALDB_* (see sidecar/tests/real_database.rs), or sets
#       realdb_error and fails
#
# Needs root (the PAM service file goes in /etc/pam.d; the server runs with
# --user=root). Startup takes a few seconds: mariadb-install-db runs once per
# machine into target/realdb/template and each start copies that.

realdb_root=${realdb_root:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
REALDB_SERVER_NAME=realdb.s2iam.test
REALDB_PID=
REALDB_SERVICE=
realdb_pids=()
realdb_error=

# Why the real database cannot run here, or nothing.
realdb_missing() {
  [ "$(id -u)" = 0 ] || { echo "not root (the PAM service file goes in /etc/pam.d)"; return; }
  command -v mariadbd >/dev/null 2>&1 || { echo "mariadb-server not installed"; return; }
  [ -f /usr/lib/mysql/plugin/auth_pam.so ] || { echo "MariaDB's auth_pam plugin missing"; return; }
  [ -f "$realdb_root/target/realdb/pam_s2iam_jwt.so" ] || { echo "PAM module not built (scripts/setup-real-database)"; return; }
  command -v openssl >/dev/null 2>&1 || { echo "openssl missing"; return; }
}

realdb_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A CA and a server certificate for REALDB_SERVER_NAME, localhost and 127.0.0.1.
realdb_tls() {
  local d=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=s2iam test CA" -keyout "$d/ca-key.pem" -out "$d/ca.pem" 2>/dev/null || return 1
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$REALDB_SERVER_NAME" \
    -keyout "$d/server-key.pem" -out "$d/server.csr" 2>/dev/null || return 1
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' "$REALDB_SERVER_NAME" >"$d/san.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial \
    -days 2 -extfile "$d/san.ext" -out "$d/server.pem" 2>/dev/null
}

# The system tables, made once (mariadb-install-db takes seconds), copied per start.
realdb_template() {
  local t=$realdb_root/target/realdb/template
  [ -f "$t/.done" ] && return 0
  rm -rf "$t" && mkdir -p "$t"
  mariadb-install-db --no-defaults --user=root --datadir="$t/data" --skip-test-db \
    --auth-root-authentication-method=socket >"$t/install.log" 2>&1 || { cat "$t/install.log" >&2; return 1; }
  touch "$t/.done"
}

realdb_start() {
  local d=$1 jwks=$2 wg=$3 user=$4
  local checker=${REALDB_CHECKER:-$realdb_root/target/debug/s2iam-jwt-check}
  [ -x "$checker" ] || { echo "realdb: $checker missing (cargo build -p s2iam-testserver)" >&2; return 1; }
  mkdir -p "$d" && realdb_template && realdb_tls "$d" || return 1
  cp -a "$realdb_root/target/realdb/template/data" "$d/data"
  REALDB_SERVICE=s2iam-realdb-$$-$RANDOM
  printf 'auth required %s %s --jwks %s --workspace-group %s\naccount required pam_permit.so\n' \
    "$realdb_root/target/realdb/pam_s2iam_jwt.so" "$checker" "$jwks" "$wg" >"/etc/pam.d/$REALDB_SERVICE"
  REALDB_PORT=${REALDB_PORT:-$(realdb_free_port)}
  REALDB_SOCK=$d/mysqld.sock
  REALDB_CA=$d/ca.pem
  mariadbd --no-defaults --user=root --datadir="$d/data" --socket="$REALDB_SOCK" \
    --pid-file="$d/mysqld.pid" --port="$REALDB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
    --log-error="$d/error.log" --ssl-ca="$d/ca.pem" --ssl-cert="$d/server.pem" --ssl-key="$d/server-key.pem" \
    --plugin-load-add=auth_pam --pam-use-cleartext-plugin=ON --local-infile=ON \
    --max-allowed-packet=64M --max-connections=400 --performance-schema=OFF --skip-log-bin \
    --innodb-buffer-pool-size=64M --innodb-log-file-size=16M --innodb-flush-log-at-trx-commit=0 \
    --thread-cache-size=64 >"$d/mariadbd.out" 2>&1 &
  REALDB_PID=$!
  local deadline=$((SECONDS + 60))
  until mariadb --no-defaults -S "$REALDB_SOCK" -u root -e 'SELECT 1' >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$REALDB_PID" 2>/dev/null; then
      echo "realdb: mariadbd did not start" >&2
      tail -n 20 "$d/error.log" >&2
      return 1
    fi
    sleep 0.2
  done
  # The anonymous users mariadb-install-db makes would win over 'USER'@'%'.
  realdb_sql "DELETE FROM mysql.global_priv WHERE User = ''; FLUSH PRIVILEGES;
    CREATE USER '$user'@'%' IDENTIFIED VIA pam USING '$REALDB_SERVICE' REQUIRE SSL;
    CREATE DATABASE app; GRANT ALL ON app.* TO '$user'@'%';
    USE app; CREATE TABLE big (id INT PRIMARY KEY, payload VARCHAR(200));
    INSERT INTO big SELECT seq, REPEAT('x', 100) FROM seq_1_to_20000;" || return 1
}

REALDB_JARS=/usr/share/java/mariadb-java-client.jar:/usr/share/java/HikariCP.jar:/usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-nop.jar
realdb_java_classes() {
  local out=$realdb_root/target/realdb/java
  local srcs=("$realdb_root/scripts/lib/realdb/Drivers.java" "$realdb_root/examples/direct-pools/HikariFreshJwt.java")
  local s stale=
  for s in "${srcs[@]}"; do [ "$s" -nt "$out/.done" ] && stale=1; done
  if [ -n "$stale" ] || [ ! -f "$out/.done" ]; then
    rm -rf "$out" && mkdir -p "$out" &&
      javac -nowarn -d "$out" -cp "$REALDB_JARS" "${srcs[@]}" >&2 && touch "$out/.done" || return 1
  fi
  echo "$out:$REALDB_JARS"
}

realdb_sql() {
  mariadb --no-defaults -S "$REALDB_SOCK" -u root -N -e "$*"
}

realdb_stop() {
  local p
  for p in "${realdb_pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${realdb_pids[@]}"; do wait "$p" 2>/dev/null; done
  realdb_pids=()
  if [ -n "$REALDB_PID" ]; then
    kill "$REALDB_PID" 2>/dev/null
    local deadline=$((SECONDS + 20))
    while kill -0 "$REALDB_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -9 "$REALDB_PID" 2>/dev/null
    wait "$REALDB_PID" 2>/dev/null
    REALDB_PID=
  fi
  [ -n "$REALDB_SERVICE" ] && rm -f "/etc/pam.d/$REALDB_SERVICE"
  REALDB_SERVICE=
}

realdb_wait_for() { # realdb_wait_for SECONDS COMMAND...
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.1
  done
}

realdb_world() {
  local tmp=$1 s2iam=$2 testserver=$3 expiry=$4
  local info=$tmp/ts.json wg=wg-realdb
  "$testserver" --port 0 --cloud gcp --token-expiry "$expiry" --info-file "$info" >"$tmp/testserver.log" 2>&1 &
  realdb_pids+=($!)
  realdb_wait_for 30 test -s "$info" || { realdb_error="the test server did not start: $(tail -n 3 "$tmp/testserver.log")"; return 1; }
  local cloud auth
  cloud=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["server_info"]["cloud_url"])' "$info")
  auth=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["server_info"]["endpoints"]["auth"])' "$info")
  local mock_env=(
    S2IAM_GCP_METADATA_ENDPOINT="$cloud" S2IAM_GCP_IAMCREDENTIALS_ENDPOINT="$cloud"
    AWS_EC2_METADATA_SERVICE_ENDPOINT="$cloud" AWS_ENDPOINT_URL_STS="$cloud"
    S2IAM_ECS_CREDENTIALS_ENDPOINT="$cloud" S2IAM_AZURE_IMDS_ENDPOINT="$cloud"
    AZURE_AUTHORITY_HOST="$cloud"
  )
  curl -sf "${auth%%/auth/*}/auth/oidc/op/Customer/.well-known/jwks.json" -o "$tmp/jwks.json" ||
    { realdb_error="no JWKS from the mock auth service"; return 1; }
  env -i PATH="$PATH" HOME="$tmp" "${mock_env[@]}" "$s2iam" --workspace-group-id "$wg" --server-url "$auth" \
    --allow-http >"$tmp/first.jwt" 2>"$tmp/cli.err" || { realdb_error="no first JWT: $(cat "$tmp/cli.err")"; return 1; }
  local user
  user=$(python3 -c 'import base64,json,sys; p=open(sys.argv[1]).read().split(".")[1]; print(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["sub"])' "$tmp/first.jwt")
  realdb_start "$tmp/db" "$tmp/jwks.json" "$wg" "$user" || { realdb_error="MariaDB did not start"; return 1; }
  local proxy_port wrong_port lifetime_port
  proxy_port=$(realdb_free_port)
  wrong_port=$(realdb_free_port)
  lifetime_port=$(realdb_free_port)
  cat >"$tmp/s2iam.toml" <<EOF
[listen]
socket = "$tmp/s2iam.sock"
[auth]
server_url = "$auth"
allow_http = true
[cache]
refresh_at = 0.5
min_remaining = "5s"
tick = "200ms"
[[token]]
type = "database"
workspace_group_id = "$wg"
sink = "$tmp/token"
sink_mode = "0644"
[[database_proxy]]
listen = "127.0.0.1:$proxy_port"
upstream = "127.0.0.1:$REALDB_PORT"
server_name = "$REALDB_SERVER_NAME"
ca_file = "$REALDB_CA"
workspace_group_id = "$wg"
user = "$user"
[[database_proxy]]
listen = "127.0.0.1:$wrong_port"
upstream = "127.0.0.1:$REALDB_PORT"
server_name = "$REALDB_SERVER_NAME"
ca_file = "$REALDB_CA"
workspace_group_id = "wg-not-this-server"
user = "$user"
[[database_proxy]]
listen = "127.0.0.1:$lifetime_port"
upstream = "127.0.0.1:$REALDB_PORT"
server_name = "$REALDB_SERVER_NAME"
ca_file = "$REALDB_CA"
workspace_group_id = "$wg"
user = "$user"
max_session_lifetime = "2s"
EOF
  env -i PATH="$PATH" HOME="$tmp" "${mock_env[@]}" "$s2iam" serve --config "$tmp/s2iam.toml" >"$tmp/sidecar.log" 2>&1 &
  realdb_pids+=($!)
  realdb_wait_for 30 test -s "$tmp/token" && realdb_wait_for 10 bash -c "echo >/dev/tcp/127.0.0.1/$proxy_port" ||
    { realdb_error="the sidecar did not start: $(tail -n 5 "$tmp/sidecar.log")"; return 1; }
  export S2IAM_REALDB_PROXY_PORT=$proxy_port S2IAM_REALDB_WRONG_PROXY_PORT=$wrong_port \
    S2IAM_REALDB_LIFETIME_PROXY_PORT=$lifetime_port \
    S2IAM_REALDB_PORT=$REALDB_PORT S2IAM_REALDB_CA=$REALDB_CA S2IAM_REALDB_USER=$user \
    S2IAM_REALDB_TOKEN_FILE=$tmp/token S2IAM_REALDB_TMP=$tmp S2IAM_REALDB_WORKSPACE_GROUP=$wg \
    S2IAM_REALDB_SOCKET=$tmp/s2iam.sock
}
