# Sourced by .ci/run and scripts/test: times each step and prints a table at the end.
#
#   . scripts/lib/steps.sh
#   timed "cargo test" cargo test --workspace     # runs it, records a row
#   steps_begin; ...; steps_end NAME STATUS       # the same around anything else
#
# The rows go to $S2IAM_STEPS (a file; .ci/run sets it so the table covers both the
# network phase and scripts/test inside the namespace). The shell that created the
# file prints the table when it exits, whether the run passed or failed.

if [ -z "${S2IAM_STEPS:-}" ]; then
  S2IAM_STEPS=$(mktemp "${TMPDIR:-/tmp}/s2iam-steps.XXXXXX")
  export S2IAM_STEPS
  S2IAM_STEPS_OWNER=$$
  S2IAM_STEPS_START=$(date +%s)
  trap 'steps_table' EXIT
fi

# CPU seconds (user + system) of this shell's finished children so far, into
# $steps_cpu_now (`times` must run in this shell, not in a $(...) subshell).
steps_cpu() {
  times >"$S2IAM_STEPS.times"
  steps_cpu_now=$(awk 'NR == 2 { split($1, u, "m"); split($2, s, "m"); printf "%d", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$S2IAM_STEPS.times")
}

# steps_begin, then steps_end NAME STATUS: appends a row (wall and CPU seconds of
# what ran between them). CPU time is what a busy machine does not inflate: on a
# machine of its own, wall time is about CPU time over the cores the step keeps busy.
steps_begin() {
  steps_t0=$(date +%s)
  steps_cpu
  steps_c0=$steps_cpu_now
}
steps_end() {
  steps_cpu
  printf '%s\t%s\t%s\t%s\n' "$1" "$(($(date +%s) - steps_t0))" "$2" "$((steps_cpu_now - steps_c0))" >>"$S2IAM_STEPS"
}

# timed NAME COMMAND...: runs COMMAND between steps_begin and steps_end; returns its
# status.
timed() {
  local name=$1 rc=0
  shift
  steps_begin
  "$@" || rc=$?
  steps_end "$name" "$rc"
  return "$rc"
}

steps_table() {
  local rc=$?
  [ "${S2IAM_STEPS_OWNER:-}" = "$$" ] || return "$rc"
  [ -s "$S2IAM_STEPS" ] || return "$rc"
  echo
  echo "== where the time went (wall and CPU seconds; status 0 = passed; load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null))"
  echo "  wall    cpu  st  step"
  awk -F'\t' '{ printf "%6d %6d  %-3s %s\n", $2, $4, $3, $1 }' "$S2IAM_STEPS"
  steps_cpu
  printf '%6d %6d      all (from the start)\n' "$(($(date +%s) - S2IAM_STEPS_START))" "$steps_cpu_now"
  rm -f "$S2IAM_STEPS" "$S2IAM_STEPS.times"
  return "$rc"
}
