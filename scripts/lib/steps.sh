# Sourced by .ci/run and scripts/test: times each step and prints a table at the end.
#
#   . scripts/lib/steps.sh
#   step "cargo test" cargo test --workspace      # runs it, records "name seconds status"
#   step_note "setup-x" 0 skipped                 # a row for something not run here
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

# step NAME COMMAND...: runs COMMAND, appends a row (wall and CPU seconds), returns
# COMMAND's status. CPU time is what a busy machine does not inflate: on a machine
# of its own, wall time is about CPU time over the cores the step keeps busy.
step() {
  local name=$1 t0 c0 rc=0 steps_cpu_now
  shift
  t0=$(date +%s)
  steps_cpu
  c0=$steps_cpu_now
  "$@" || rc=$?
  steps_cpu
  printf '%s\t%s\t%s\t%s\n' "$name" "$(($(date +%s) - t0))" "$rc" "$((steps_cpu_now - c0))" >>"$S2IAM_STEPS"
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
