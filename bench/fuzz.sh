#!/usr/bin/env bash
# Runs every Go fuzz target of the repository, one after another.
#
#   bash bench/fuzz.sh [DURATION]     # DURATION per target, default 10m; CI runs 3s
#
# Targets are found by grepping the test files for `func FuzzName(f *testing.F)`,
# so a target added to any package runs without editing this script.
# For each it prints the executions reached and, when it fails, the input that
# failed (Go writes it to the package's testdata/fuzz/FuzzName/, where it stays
# a regression seed once committed). Exits 1 if any target failed.
#
# Environment:
#   FUZZ_PARALLEL       fuzzing workers per target (default 1: the machines this
#                       runs on have two cores, shared)
#   FUZZ_MINIMIZE_TIME  how long a worker shrinks an input (default 5s). Go shrinks
#                       every input that finds new coverage, not just failing ones,
#                       and does not count those executions until it is done; with
#                       its default of 60s a target can spend most of a run on one.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10m}
parallel=${FUZZ_PARALLEL:-1}
minimize=${FUZZ_MINIMIZE_TIME:-5s}

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*_test.go')
else
  mapfile -t files < <(find . -name '*_test.go' -not -path './.git/*' | sed 's|^\./||')
fi
# "dir FuzzName" for each target, in a stable order.
mapfile -t targets < <(
  for f in "${files[@]}"; do [ -f "$f" ] && printf '%s\0' "$f"; done |
    xargs -0 -r grep -HoE '^func Fuzz[A-Za-z0-9_]*\([A-Za-z_][A-Za-z0-9_]* \*testing\.F\)' |
    sed -E 's|^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*$|\1 \2|; s|^[^/ ]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*$|. \1|' |
    sort -u
)
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi

echo "fuzz: ${#targets[@]} targets, $duration each, $parallel worker(s); $(go version)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=0
for t in "${targets[@]}"; do
  read -r dir name <<<"$t"
  pkg=./$dir
  [ "$dir" = . ] && pkg=.
  start=$SECONDS
  status=ok
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$duration" -fuzzminimizetime "$minimize" \
    -parallel "$parallel" "$pkg" >"$log" 2>&1 || status=FAILED
  if [ "$status" != ok ] && grep -qx '    context deadline exceeded' "$log" &&
    ! grep -q 'Failing input written to' "$log"; then
    # Go's coordinator, not the target: up to Go 1.26 it may report its own
    # -fuzztime deadline as a failure (go.dev/issue/75804). Nothing failed.
    status="ok (go.dev/issue/75804: Go reported its own deadline)"
  fi
  execs=$(grep -oE 'execs: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2 || true)
  printf 'fuzz: %-24s %-16s %12s execs %5ds  %s\n' "$name" "$pkg" "${execs:--}" $((SECONDS - start)) "$status"
  if [ "$status" = FAILED ]; then
    failed=$((failed + 1))
    crasher=$(sed -n 's/^.*Failing input written to \(.*\)$/\1/p' "$log" | tail -n 1)
    if [ -n "$crasher" ]; then
      echo "fuzz:   failing input: $dir/$crasher"
      echo "fuzz:   re-run: go test -run '^$name/$(basename "$crasher")\$' $pkg"
    fi
    # From the failure on (a panic's message comes before its stack), or the
    # end of what go test said (a build error).
    if grep -q -- '--- FAIL' "$log"; then
      sed -n '/--- FAIL/,$p' "$log" | head -n 40
    else
      grep -v 'fuzz: elapsed: ' "$log" | tail -n 30
    fi | sed 's/^/fuzz:   | /'
  fi
done
if [ "$failed" -gt 0 ]; then
  echo "fuzz: $failed of ${#targets[@]} targets failed"
  exit 1
fi
