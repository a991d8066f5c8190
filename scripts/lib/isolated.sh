# Sourced by the scripts that talk to the real metadata addresses.
#
#   ensure_isolated "$@"
#
# Returns when this shell is inside the isolated network namespace (169.254.169.254
# bound to loopback: ../shared/bin/isolated or an equivalent). Otherwise re-executes
# the calling script inside ../shared/bin/isolated when that works, or prints SKIP
# and exits 0. Nothing here ever sends a packet: the metadata addresses are only
# used once they are known to be on this namespace's loopback.
#
# Call it from the repository root (the scripts cd there first).

in_isolated_namespace() {
  command -v ip >/dev/null 2>&1 || return 1
  # Read all of ip's output first: `ip | grep -q` fails under pipefail when grep
  # exits early and ip gets SIGPIPE.
  local addrs
  addrs=$(ip -o addr show lo 2>/dev/null) || return 1
  case "$addrs" in
    *" 169.254.169.254/"*) return 0 ;;
    *) return 1 ;;
  esac
}

ensure_isolated() {
  if in_isolated_namespace; then
    return 0
  fi
  local name iso
  name=$(basename "$0")
  if [ -n "${S2IAM_SCRIPT_REEXECED:-}" ]; then
    # Re-executed but still not isolated: never fall through to the host network.
    echo "FAIL: $name: re-executed inside ../shared/bin/isolated but 169.254.169.254 is not on loopback" >&2
    exit 1
  fi
  iso=../shared/bin/isolated
  if [ -x "$iso" ] && "$iso" true >/dev/null 2>&1; then
    S2IAM_SCRIPT_REEXECED=1 exec "$iso" env S2IAM_SCRIPT_REEXECED=1 "$0" "$@"
  fi
  echo "SKIP: $name: needs an isolated network namespace with 169.254.169.254 on loopback"
  echo "      (../shared/bin/isolated is missing or cannot create namespaces: needs root);"
  echo "      it never talks to a real metadata address from the host."
  exit 0
}
