#!/usr/bin/env bash
# Validates every manifest and CI example under deploy/ offline, with the
# validators those systems use, and checks that each validator rejects a
# deliberately broken file (deploy/check/broken/) for the stated reason.
#
#   bash deploy/check/check.sh
#
# - Kubernetes: each kustomization under deploy/kubernetes/ is built with
#   kustomize, and the output is checked by kubectl-validate against
#   Kubernetes 1.30's OpenAPI schemas (bundled in kubectl-validate): unknown
#   fields, wrong types, missing required fields.
# - Chaos Mesh: deploy/chaos-mesh/ is built with kustomize; its chaos-mesh.org
#   objects are decoded strictly into Chaos Mesh's Go API types (unknown
#   fields, wrong types) and run through the kinds' admission webhook code,
#   by deploy/check/chaosmesh (a Go module of its own, which requires
#   github.com/chaos-mesh/chaos-mesh/api); the built-in kinds go to
#   kubectl-validate as above.
# - LitmusChaos: deploy/litmus/ is built with kustomize; the built-in kinds
#   go to kubectl-validate, Litmus's own are not schema-checked (no
#   registry reachable here serves Litmus's CRDs or API types).
# - GitHub Actions: actionlint (with shellcheck for run: scripts).
# - GitLab CI: gitlab-ci-local, which checks a pipeline against GitLab's CI
#   JSON schema and its own rules (e.g. a job without script).
# - Chaos Toolkit: pgchaos's checker deploy/check/ctkcheck.py (Python 3
#   stdlib, not chaostoolkit) validates each experiment by chaostoolkit's
#   rules and runs it with chaostoolkit's semantics against a real pgchaos.
#
# The tools are installed only when missing, pinned, into
# $PGCHAOS_TOOLS (default ~/.cache/pgchaos-tools), outside the repository:
# the Go ones with `go install tool@version`, which leaves the project's
# go.mod alone. A cold install takes about 5 minutes (kubectl-validate
# builds much of Kubernetes), and the first build of deploy/check/chaosmesh
# about 2 more; after that a run takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."

KUSTOMIZE_VERSION=v5.8.1
KUBECTL_VALIDATE_VERSION=v0.0.4
ACTIONLINT_VERSION=v1.7.12
GITLAB_CI_LOCAL_VERSION=4.64.1 # later versions need Node 22
KUBERNETES_VERSION=1.30 # newest schema set bundled in kubectl-validate v0.0.4

tools=${PGCHAOS_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/pgchaos-tools}
mkdir -p "$tools"

go_tool() { # NAME PACKAGE VERSION: prints the binary's path
  local dir="$tools/$1-$3"
  if [ ! -x "$dir/$1" ]; then
    echo "check: installing $2@$3" >&2
    (cd "$tools" && GOFLAGS= GOBIN="$dir" go install "$2@$3") >&2
  fi
  echo "$dir/$1"
}
kustomize=$(go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION")
kubectl_validate=$(go_tool kubectl-validate sigs.k8s.io/kubectl-validate "$KUBECTL_VALIDATE_VERSION")
actionlint=$(go_tool actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION")

glci_dir="$tools/gitlab-ci-local-$GITLAB_CI_LOCAL_VERSION"
if [ ! -x "$glci_dir/node_modules/.bin/gitlab-ci-local" ]; then
  echo "check: installing gitlab-ci-local@$GITLAB_CI_LOCAL_VERSION" >&2
  mkdir -p "$glci_dir"
  npm install --silent --no-audit --no-fund --prefix "$glci_dir" "gitlab-ci-local@$GITLAB_CI_LOCAL_VERSION" >&2
fi
gitlab_ci_local="$glci_dir/node_modules/.bin/gitlab-ci-local"

# actionlint runs shellcheck on run: scripts when it is on PATH.
if ! command -v shellcheck >/dev/null 2>&1; then
  echo "check: installing shellcheck" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null; }
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0 failed=0
pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; sed 's/^/     /' "$work/out"; }

k8s_validate() { # FILE: kubectl-validate, output in $work/out
  "$kubectl_validate" --version "$KUBERNETES_VERSION" "$1" >"$work/out" 2>&1
}
chaos_mesh_validate() { # FILE: Chaos Mesh's objects with its API types, the others with kubectl-validate; output in $work/out
  local rc=0
  rm -f "$work/others.yaml"
  "$work/chaosmesh" -others "$work/others.yaml" "$1" >"$work/out.chaosmesh" 2>&1 || rc=1
  : >"$work/out"
  if [ -s "$work/others.yaml" ]; then k8s_validate "$work/others.yaml" || rc=1; fi
  cat "$work/out.chaosmesh" >>"$work/out"
  return "$rc"
}
gitlab_validate() { # FILE: gitlab-ci-local in a scratch repository, output in $work/out
  local repo="$work/gitlab"
  rm -rf "$repo" && mkdir -p "$repo"
  cp "$1" "$repo/.gitlab-ci.yml"
  git -C "$repo" init -q -b main
  git -C "$repo" -c user.name=check -c user.email=check@localhost commit -q --allow-empty -m scratch
  git -C "$repo" remote add origin https://gitlab.example.com/acme/shop.git
  git -C "$repo" update-ref refs/remotes/origin/main HEAD
  git -C "$repo" symbolic-ref refs/remotes/origin/HEAD refs/remotes/origin/main
  (cd "$repo" && "$gitlab_ci_local" --list --json-schema-validation --home "$work/gitlab-home") >"$work/out" 2>&1
}

# 1. Kubernetes manifests, built with kustomize, against Kubernetes' schemas.
for k in $(git ls-files 'deploy/kubernetes/*kustomization.yaml'); do
  dir=$(dirname "$k")
  if ! "$kustomize" build "$dir" >"$work/built.yaml" 2>"$work/out"; then
    fail "kustomize build $dir"
  elif k8s_validate "$work/built.yaml"; then
    pass "$dir: kustomize build | kubectl-validate ($(grep -c '^kind:' "$work/built.yaml") objects)"
  else
    fail "$dir: kubectl-validate"
  fi
done

# 1b. The Chaos Mesh manifests, built with kustomize: the Workflow against
# Chaos Mesh's API types and webhooks, the rest against Kubernetes' schemas.
(cd deploy/check/chaosmesh && go build -o "$work/chaosmesh" .)
for k in $(git ls-files 'deploy/chaos-mesh/kustomization.yaml'); do
  dir=$(dirname "$k")
  if ! "$kustomize" build "$dir" >"$work/built.yaml" 2>"$work/out"; then
    fail "kustomize build $dir"
  elif chaos_mesh_validate "$work/built.yaml"; then
    all=$(grep -c '^kind:' "$work/built.yaml") others=$(grep -c '^kind:' "$work/others.yaml")
    pass "$dir: kustomize build | chaosmesh ($((all - others)) objects) + kubectl-validate ($others objects)"
  else
    fail "$dir: chaosmesh, kubectl-validate"
  fi
done

# 1c. The LitmusChaos manifests, built with kustomize: the built-in kinds
# against Kubernetes' schemas. Litmus's own kinds (ChaosExperiment,
# ChaosEngine) are not schema-checked: no registry reachable here serves
# Litmus's CRDs or Go API types (the Go module proxy has none of
# github.com/litmuschaos/chaos-operator, litmus-go, chaos-runner).
split_group() { # FILE GROUP: documents of apiVersion GROUP/... to $work/group.yaml, the rest to $work/others.yaml
  awk -v group="$2" -v g="$work/group.yaml" -v o="$work/others.yaml" '
    function flush(  f) {
      if (doc == "") return
      f = doc ~ ("(^|\n)apiVersion: " group "/") ? g : o
      if (seen[f]++) print "---" > f
      print doc > f
      doc = ""
    }
    /^---$/ { flush(); next }
    { doc = doc (doc == "" ? "" : "\n") $0 }
    END { flush() }' "$1"
}
for k in $(git ls-files 'deploy/litmus/kustomization.yaml'); do
  dir=$(dirname "$k")
  rm -f "$work/group.yaml" "$work/others.yaml"
  if ! "$kustomize" build "$dir" >"$work/built.yaml" 2>"$work/out"; then
    fail "kustomize build $dir"
    continue
  fi
  split_group "$work/built.yaml" litmuschaos.io
  unchecked=$(sed -n 's/^kind: //p' "$work/group.yaml" 2>/dev/null | paste -sd, -)
  if k8s_validate "$work/others.yaml"; then
    pass "$dir: kustomize build | kubectl-validate ($(grep -c '^kind:' "$work/others.yaml") objects; not schema-checked: ${unchecked:-none})"
  else
    fail "$dir: kubectl-validate"
  fi
done

# 2. The pgchaos experiments those manifests run, with pgchaos's own validator.
go build -o "$work/pgchaos" ./cmd/pgchaos
for f in $(git ls-files 'deploy/*/experiment-*.yaml'); do
  if "$work/pgchaos" validate "$f" >"$work/out" 2>&1; then pass "$f: pgchaos validate"; else fail "$f: pgchaos validate"; fi
done

# 3. CI examples.
for f in $(git ls-files 'deploy/ci/github/*.yml'); do
  if "$actionlint" "$f" >"$work/out" 2>&1; then pass "$f: actionlint"; else fail "$f: actionlint"; fi
done
for f in $(git ls-files 'deploy/ci/gitlab/*.yml'); do
  if gitlab_validate "$f"; then pass "$f: gitlab-ci-local"; else fail "$f: gitlab-ci-local"; fi
done

# 4. The Chaos Toolkit experiments, with pgchaos's checker deploy/check/ctkcheck.py
# (not chaostoolkit, which cannot be installed here: no PyPI): the structure
# by chaostoolkit's validation rules, then a run with chaostoolkit's semantics
# against a pgchaos with a throwaway PostgreSQL. Asserted: steady state met
# before and after, every activity succeeded with a non-error answer (--strict),
# the SELECT during the fault took at least the 200 ms delay, the rollback
# removed the rule. Broken experiments (deploy/check/broken/chaostoolkit-*.json)
# must be rejected with their "description": "want: TEXT".
if ! python3 -c 'import json, ssl, subprocess, urllib.request' 2>/dev/null; then
  echo "check: installing python3" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 >/dev/null; }
fi
ctk_run() { # EXPERIMENT: output in $work/out
  local dir="$work/ctk" api pg rc=0 after
  mkdir -p "$dir"
  printf 'check-token\n' >"$dir/token"
  "$work/pgchaos" proxy --embedded --name pg --listen 127.0.0.1:0 --api 127.0.0.1:0 \
    --api-token-file "$dir/token" --log-format json >"$dir/pgchaos.log" 2>&1 &
  local pid=$!
  for _ in $(seq 150); do grep -q '"proxy listening"' "$dir/pgchaos.log" && break; sleep 0.2; done
  api=$(sed -n 's/.*"control API listening","addr":"\([^"]*\)".*/\1/p' "$dir/pgchaos.log")
  pg=$(sed -n 's/.*"proxy listening","proxy":"pg","listen":"\([^"]*\)".*/\1/p' "$dir/pgchaos.log")
  PGCHAOS_API="http://$api" PGCHAOS_API_TOKEN=check-token PGCHAOS_HOLD_SECONDS=1 \
    DATABASE_URL="postgres://postgres@$pg/postgres?sslmode=disable" \
    timeout 120 python3 deploy/check/ctkcheck.py run --strict --rollback-strategy always \
    --journal "$dir/journal.json" "$1" >"$work/out" 2>&1 || rc=$?
  after=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer check-token' "http://$api/rules/slow-selects")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  [ "$rc" -eq 0 ] || { cat "$dir/pgchaos.log" >>"$work/out"; return 1; }
  python3 - "$dir/journal.json" "$after" >>"$work/out" 2>&1 <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
ss = j["steady_states"]
runs = {r["activity"]["name"]: r for r in j["run"] + j["rollbacks"]}
during = runs["a-select-through-pgchaos-still-answers"]["duration"]
print(f"journal: status {j['status']}, deviated {j['deviated']}; SELECT during the fault {during:.3f}s; GET /rules/slow-selects after: {sys.argv[2]}")
assert j["status"] == "completed" and not j["deviated"], "experiment did not complete"
assert ss["before"]["steady_state_met"] and ss["after"]["steady_state_met"], "steady state not met"
assert len(j["rollbacks"]) == 1, "the rollback did not run"
assert all(r["status"] == "succeeded" for r in runs.values()), "an activity failed"
assert during >= 0.2, "the 200ms delay was not felt"
assert sys.argv[2] == "404", "the rollback left the rule armed"
PY
}
for f in $(git ls-files 'deploy/chaostoolkit/*.json'); do
  if PGCHAOS_API_TOKEN=check-token python3 deploy/check/ctkcheck.py validate "$f" >"$work/out" 2>&1; then
    pass "$f: ctkcheck validate"
  else
    fail "$f: ctkcheck validate"
  fi
  if ctk_run "$f"; then pass "$f: ctkcheck run ($(grep '^journal:' "$work/out"))"; else fail "$f: ctkcheck run"; fi
done
for f in $(git ls-files 'deploy/check/broken/chaostoolkit-*.json'); do
  want=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["description"].removeprefix("want: "))' "$f" 2>/dev/null || true)
  PGCHAOS_API_TOKEN=check-token python3 deploy/check/ctkcheck.py validate "$f" >"$work/out" 2>&1 && rejected=no || rejected=yes
  if [ "$rejected" = yes ] && [ -n "$want" ] && grep -qF -- "$want" "$work/out"; then
    pass "$f: rejected ($want)"
  else
    fail "$f: want rejected with \"$want\""
  fi
done

# 5. The validators bite: each broken file is rejected, for the reason its
# first line states ("# want: TEXT", TEXT found in the validator's output).
for f in $(git ls-files 'deploy/check/broken/*'); do
  want=$(sed -n '1s/^# want: //p' "$f")
  case $f in
    */kustomize-*/kustomization.yaml)
      "$kustomize" build "$(dirname "$f")" >"$work/built.yaml" 2>"$work/out" && k8s_validate "$work/built.yaml" && rejected=no || rejected=yes ;;
    */kustomize-*) continue ;;
    */chaostoolkit-*.json) continue ;; # section 4
    */chaos-mesh-*) chaos_mesh_validate "$f" && rejected=no || rejected=yes ;;
    */github-*) "$actionlint" "$f" >"$work/out" 2>&1 && rejected=no || rejected=yes ;;
    */gitlab-*) gitlab_validate "$f" && rejected=no || rejected=yes ;;
    *) k8s_validate "$f" && rejected=no || rejected=yes ;;
  esac
  if [ -z "$want" ]; then
    echo "no '# want:' first line" >"$work/out"; fail "$f"
  elif [ "$rejected" = yes ] && grep -qF -- "$want" "$work/out"; then
    pass "$f: rejected ($want)"
  else
    fail "$f: want rejected with \"$want\""
  fi
done

echo "deploy-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
