# Sourced (not executable, so scripts/check-attacks does not run it) by the
# attack scripts 07, 08 and 10: isolation, a temporary directory cleaned up on
# exit, the mock cloud/auth/API (s2iam-testserver) on loopback, and the
# environment that points every endpoint of s2iam at it.
# Nothing here reaches a non-loopback address.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Inside ../shared/bin/isolated when it is available (loopback only, the metadata
# addresses bound to the namespace's lo), as scripts/check-api-proxy does.
if ! ip -o addr show lo 2>/dev/null | grep -q 169.254.169.254 && [ -z "${S2IAM_CHECK_NO_ISOLATE:-}" ]; then
  isolated=$root/../shared/bin/isolated
  if [ -x "$isolated" ] && "$isolated" true 2>/dev/null; then
    exec "$isolated" env S2IAM_CHECK_NO_ISOLATE=1 "$0" "$@"
  fi
fi

s2iam=${S2IAM_BIN:-$("$root/scripts/build-release")}
testserver=${S2IAM_TESTSERVER:-$(dirname "$s2iam")/s2iam-testserver}
if [ ! -x "$testserver" ]; then
  testserver=$root/target/debug/s2iam-testserver
  [ -x "$testserver" ] || (cd "$root" && cargo build --quiet -p s2iam-testserver --bin s2iam-testserver >&2)
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT

wait_for() { # wait_for SECONDS COMMAND...
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.1
  done
}
json() { # json FILE PYTHON-EXPRESSION-ON-d
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Every endpoint at $1 (a closed loopback port when no mock is needed).
mock_env() {
  local base=$1
  echo env -i PATH="$PATH" HOME="$tmp" \
    AWS_EC2_METADATA_SERVICE_ENDPOINT="$base" AWS_ENDPOINT_URL_STS="$base" \
    S2IAM_ECS_CREDENTIALS_ENDPOINT="$base" S2IAM_GCP_METADATA_ENDPOINT="$base" \
    S2IAM_GCP_IAMCREDENTIALS_ENDPOINT="$base" S2IAM_AZURE_IMDS_ENDPOINT="$base" \
    AZURE_AUTHORITY_HOST="$base" S2IAM_AZURE_CLI=off
}

# Starts the mock cloud, auth service and APIs; sets cloud, auth, mock_api.
start_mocks() {
  timeout --kill-after=5 60 "$testserver" --port 0 --cloud gcp --api-listen 127.0.0.1:0 \
    --info-file "$tmp/ts.json" >"$tmp/testserver.log" 2>&1 &
  pids+=($!)
  wait_for 20 test -s "$tmp/ts.json" || return 1
  cloud=$(json "$tmp/ts.json" 'd["server_info"]["cloud_url"]')
  auth=$(json "$tmp/ts.json" 'd["server_info"]["endpoints"]["auth"]')
  mock_api=$(json "$tmp/ts.json" 'd["server_info"]["api_url"]')
}
