#!/usr/bin/env bash
# buf breaking: the protos of this commit against those of the previous one
# (or of $KEQUN_BREAKING_AGAINST, any git revision, e.g. the merge base of a
# branch: KEQUN_BREAKING_AGAINST=$(git merge-base main HEAD)). Offline: buf
# reads the repository's own .git. Rules: buf.yaml `breaking` (FILE).
#
#   bash scripts/buf_breaking.sh        (make breaking-protos; make ci runs it)
#
# Skips, with a note, only when there is no previous commit (a repository's
# first commit). A shallow clone is deepened by one commit first; if that is
# impossible the check fails instead of passing without comparing anything.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=${BUF:-npx --yes @bufbuild/buf@1.75.0}
against=${KEQUN_BREAKING_AGAINST:-HEAD~1}

resolve() { git rev-parse -q --verify "$against^{commit}" 2>/dev/null; }

if ! sha=$(resolve); then
  if [[ $(git rev-parse --is-shallow-repository) == true ]]; then
    echo "buf breaking: shallow clone, fetching one more commit" >&2
    git fetch -q --deepen=1 2>/dev/null || true
    sha=$(resolve) || { echo "buf breaking: FAILED: $against is not in this shallow clone" >&2; exit 1; }
  elif [[ $against == HEAD~1 && -z $(git rev-list --max-count=1 --skip=1 HEAD) ]]; then
    echo "buf breaking: skipped, HEAD is the first commit (nothing to compare with)"
    exit 0
  else
    echo "buf breaking: FAILED: unknown revision $against" >&2
    exit 1
  fi
fi

echo "buf breaking: protos/ against $against ($(git rev-parse --short "$sha"))"
# buf clones the ref out of .git itself; depth covers a merge base far back.
$BUF breaking --against ".git#ref=$sha,depth=$(( $(git rev-list --count "$sha..HEAD") + 1 ))"
echo "buf breaking: no breaking change"
