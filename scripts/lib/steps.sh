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

# step NAME COMMAND...: runs COMMAND, appends a row, returns COMMAND's status.
step() {
  local name=$1 t0 rc=0
  shift
  t0=$(date +%s)
  "$@" || rc=$?
  printf '%s\t%s\t%s\n' "$name" "$(($(date +%s) - t0))" "$rc" >>"$S2IAM_STEPS"
  return "$rc"
}

steps_table() {
  local rc=$?
  [ "${S2IAM_STEPS_OWNER:-}" = "$$" ] || return "$rc"
  [ -s "$S2IAM_STEPS" ] || return "$rc"
  echo
  echo "== where the time went (seconds; status 0 = passed)"
  awk -F'\t' '{ printf "%6d  %-3s %s\n", $2, $3, $1; total += $2 }' "$S2IAM_STEPS"
  printf '%6d  all (wall clock)\n' "$(($(date +%s) - S2IAM_STEPS_START))"
  rm -f "$S2IAM_STEPS"
  return "$rc"
}
