#!/bin/sh
# The Dockerfile's build stage without a Docker engine: stage the build
# context exactly as the stage's COPY lines do, then run the same
# build-steps.sh into a temporary prefix (CI: .ci/ops.sh).
#
#   deploy/docker/dry-build.sh [WORKDIR]     (default: a new temp dir, removed afterwards)
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DOCKERFILE="$ROOT/deploy/Dockerfile"
WORK=${1:-$(mktemp -d)}
[ -n "${1:-}" ] || trap 'rm -rf "$WORK"' EXIT
CONTEXT="$WORK/src"
mkdir -p "$CONTEXT"

# COPY lines of the build stage (before the second FROM), without --from:
# every source is copied to the same relative path (the Dockerfile promises it).
awk '/^FROM /{stage++} stage==1 && /^COPY / && !/--from/ {for (i=2; i<NF; i++) print $i}' "$DOCKERFILE" |
while read -r source; do
    mkdir -p "$CONTEXT/$(dirname "$source")"
    cp -R "$ROOT/$source" "$CONTEXT/$source"
done
# What `docker build` would not send either.
find "$CONTEXT" -name __pycache__ -type d -prune -exec rm -rf {} +

# The RUN of the build stage that builds the image's environment.
grep -q '^RUN sh deploy/docker/build-steps.sh /opt/kequn /src$' "$DOCKERFILE" || {
    echo "dry-build: the Dockerfile no longer runs deploy/docker/build-steps.sh /opt/kequn /src" >&2; exit 1; }
cd "$CONTEXT"
sh deploy/docker/build-steps.sh "$WORK/opt/kequn" "$CONTEXT"

# The runtime stage: the environment runs as an unprivileged user, from anywhere.
# (Only where this host's own python is usable by that user: in the image it is /usr/local/bin.)
AS_USER="setpriv --reuid=10001 --regid=10001 --clear-groups"
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null \
        && (cd / && $AS_USER "$(readlink -f "$WORK/opt/kequn/bin/python")" -c pass) 2>/dev/null; then
    chmod -R a+rX "$WORK/opt"
    chmod a+x "$WORK"
    (cd / && $AS_USER "$WORK/opt/kequn/bin/kequn" --help >/dev/null)
    echo "dry-build: kequn runs as uid 10001"
else
    echo "dry-build: run as uid 10001 not checked here (not root, or this host's python is private)"
fi
echo "dry-build: ok"
