#!/usr/bin/env bash
# Mutation testing: makes small breakages of the code, one at a time, and
# counts how many the tests catch. Not run in CI (it takes from minutes for
# faults/ to hours for proxy/); its efficacy per package goes into the note
# of every issue that touches these packages.
#
#   bash bench/mutation.sh                      # faults experiments/verify experiments/runner proxy
#   bash bench/mutation.sh faults experiments/verify
#
# For each package it prints the efficacy (killed / (killed + lived)) and
# the mutant coverage ((killed + lived) / every mutant), and lists the
# mutants that lived. Logs and gremlins' JSON go to $MUTATION_OUT (default
# a temporary directory, printed at the end).
#
# Settings: WORKERS (default 1: the machine is shared, and the database
# tests start servers of their own), TIMEOUT_COEFFICIENT (a mutant's tests
# may take this many times the plain run; default per package below),
# GREMLINS (the gremlins binary; installed with `go install` when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

gremlins_version=v0.6.0
gremlins=${GREMLINS:-$(command -v gremlins || echo "$(go env GOPATH)/bin/gremlins")}
if [ ! -x "$gremlins" ]; then
  echo "mutation: installing gremlins $gremlins_version"
  go install "github.com/go-gremlins/gremlins/cmd/gremlins@$gremlins_version"
  gremlins="$(go env GOPATH)/bin/gremlins"
fi

out=${MUTATION_OUT:-$(mktemp -d -t pgchaos-mutation-XXXXXX)}
mkdir -p "$out"
workers=${WORKERS:-1}

# proxy/: only the fault path — where verdicts are carried out and byte
# toxics run. The rest of the data plane (framing, startup, loops) has its
# fuzzers and transparency tests, and would take a day.
proxy_fault_path='^(faultpump|toxics|relay)\.go$'

# The runner's tests that run the shipped experiments on an embedded
# PostgreSQL each take tens of seconds; mutants are judged by the fast tests
# that drive small experiments against the package's one PostgreSQL.
runner_slow='^(TestTwoPhaseMidPrepare|TestCommitAckLost.*|TestShippedExperiments|TestInterruptRunsRollbacks)$'

packages=("$@")
[ ${#packages[@]} -gt 0 ] || packages=(faults experiments/verify experiments/runner proxy)

summary=()
for pkg in "${packages[@]}"; do
  pkg=${pkg#./}
  pkg=${pkg%/}
  [ -d "$pkg" ] || { echo "mutation: no package directory $pkg" >&2; exit 2; }
  coefficient=${TIMEOUT_COEFFICIENT:-}
  goflags="${GOFLAGS:-} -count=1"
  exclude=()
  case $pkg in
    faults) coefficient=${coefficient:-10} ;;
    experiments/verify) coefficient=${coefficient:-5} ;;
    experiments/runner)
      coefficient=${coefficient:-4}
      goflags="$goflags -skip=$runner_slow"
      ;;
    proxy)
      coefficient=${coefficient:-3}
      for f in proxy/*.go; do
        base=$(basename "$f")
        case $base in *_test.go) continue ;; esac
        [[ $base =~ $proxy_fault_path ]] || exclude+=(--exclude-files "^${base//./\\.}\$")
      done
      ;;
    *) coefficient=${coefficient:-5} ;;
  esac
  name=${pkg//\//_}
  log="$out/$name.log"
  echo "mutation: $pkg (workers $workers, timeout coefficient $coefficient) -> $log"
  start=$(date +%s)
  # gremlins' own exit status says nothing about the tests (no thresholds
  # are set); a failing coverage run is reported from its log.
  GOFLAGS="$goflags" "$gremlins" unleash "$root/$pkg" \
    --workers "$workers" --timeout-coefficient "$coefficient" \
    --output "$out/$name.json" "${exclude[@]}" >"$log" 2>&1 || true
  took=$(( $(date +%s) - start ))
  if [ ! -s "$out/$name.json" ]; then
    echo "mutation: $pkg: gremlins produced no result; last lines of $log:" >&2
    tail -20 "$log" >&2
    summary+=("$(printf '%-20s  no result (see %s)' "$pkg" "$log")")
    continue
  fi
  # Strip colours, then read the totals gremlins printed.
  plain=$(sed 's/\x1b\[[0-9;]*m//g' "$log")
  killed=$(sed -n 's/.*Killed: \([0-9]*\),.*/\1/p' <<<"$plain" | tail -1)
  lived=$(sed -n 's/.*Lived: \([0-9]*\),.*/\1/p' <<<"$plain" | tail -1)
  notcov=$(sed -n 's/.*Not covered: \([0-9]*\).*/\1/p' <<<"$plain" | tail -1)
  timedout=$(sed -n 's/.*Timed out: \([0-9]*\),.*/\1/p' <<<"$plain" | tail -1)
  notviable=$(sed -n 's/.*Not viable: \([0-9]*\),.*/\1/p' <<<"$plain" | tail -1)
  efficacy=$(sed -n 's/.*Test efficacy: \([0-9.]*\)%.*/\1/p' <<<"$plain" | tail -1)
  coverage=$(sed -n 's/.*Mutator coverage: \([0-9.]*\)%.*/\1/p' <<<"$plain" | tail -1)
  echo "mutation: $pkg: efficacy ${efficacy}% (killed $killed, lived $lived), mutant coverage ${coverage}% (not covered $notcov), timed out $timedout, not viable $notviable, in ${took}s"
  grep -E '^ *LIVED' <<<"$plain" | sed 's/^ */  /' || true
  summary+=("$(printf '%-20s  efficacy %6s%%  mutant coverage %6s%%  killed %4s  lived %4s  not covered %4s  timed out %3s  (%ss)' \
    "$pkg" "$efficacy" "$coverage" "$killed" "$lived" "$notcov" "$timedout" "$took")")
done

echo
echo "mutation testing (gremlins $gremlins_version), results in $out:"
printf '  %s\n' "${summary[@]}"
