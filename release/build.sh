#!/usr/bin/env bash
# Builds pgchaos's release archives: for each target a static binary
# (CGO_ENABLED=0, -trimpath) stamped with its version, commit and build date,
# packed with LICENSE, NOTICE, README.md and CHANGELOG.md as
# pgchaos_VERSION_OS_ARCH.tar.gz (VERSION without its "v"), and SHA256SUMS over
# the archives. Needs git, Go, GNU tar, gzip and sha256sum.
#
# Usage: release/build.sh [--print-version] [VERSION]
#   VERSION  e.g. v0.1.0. Default: $VERSION, else `git describe --tags --match 'v*'
#            --dirty`: the tag on HEAD (v0.1.0), or past it v0.1.0-3-gabc1234,
#            with -dirty when tracked files are modified. No v* tag and none
#            given: an error.
#   --print-version  print the version it would stamp, and build nothing.
# Environment:
#   TARGETS  OS/ARCH pairs (default: linux/amd64 linux/arm64 darwin/amd64
#            darwin/arm64); "host" is this machine's.
#   OUT      the directory for the archives (default: dist); archives and
#            SHA256SUMS left there by an earlier build are removed first.
#   SOURCE_DATE_EPOCH  the build date stamped and the archives' file times
#            (default: HEAD's commit time), so that rebuilding a commit gives
#            the same archives and checksums.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
die() { echo "release: $*" >&2; exit 2; }

print_only=false
if [ "${1:-}" = --print-version ]; then print_only=true; shift; fi
[ $# -le 1 ] || die "usage: release/build.sh [--print-version] [VERSION]"
version=${1:-${VERSION:-}}
if [ -z "$version" ]; then
  version=$(git describe --tags --match 'v*' --dirty 2>/dev/null) ||
    die "no v* tag to take the version from: tag the release commit (git tag -a v0.1.0) or give the version (release/build.sh v0.1.0)"
fi
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]*)?$ ]] || die "version $version: want vMAJOR.MINOR.PATCH, e.g. v0.1.0"
if $print_only; then echo "$version"; exit 0; fi

commit=$(git rev-parse HEAD)
git diff --quiet HEAD -- || commit+="+dirty"
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}
date=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
targets=${TARGETS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}
targets=${targets//host/$(go env GOHOSTOS)/$(go env GOHOSTARCH)}
out=${OUT:-dist}
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/pgchaos_*.tar.gz "$out/SHA256SUMS"

pkg=github.com/pgchaos/pgchaos/internal/buildinfo
ldflags="-s -w -X $pkg.Version=$version -X $pkg.Commit=$commit -X $pkg.Date=$date"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
archives=()
for target in $targets; do
  os=${target%/*} arch=${target#*/}
  [[ $target == */* && -n $os && -n $arch ]] || die "target $target: want OS/ARCH, e.g. linux/amd64"
  name=pgchaos_${version#v}_${os}_${arch}
  echo "release: building $name ($version, $commit, $date)"
  mkdir "$stage/$name"
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -ldflags "$ldflags" -o "$stage/$name/pgchaos" ./cmd/pgchaos
  cp LICENSE NOTICE README.md CHANGELOG.md "$stage/$name/"
  tar -C "$stage/$name" --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -cf - pgchaos LICENSE NOTICE README.md CHANGELOG.md | gzip -9n >"$out/$name.tar.gz"
  archives+=("$name.tar.gz")
done
(cd "$out" && sha256sum "${archives[@]}" >SHA256SUMS)
echo "release: $out:"
(cd "$out" && ls -l "${archives[@]}" SHA256SUMS)
