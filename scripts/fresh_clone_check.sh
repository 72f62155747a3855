#!/usr/bin/env bash
# Run README's two commands as a new user would: on a fresh clone of the committed HEAD, in a temporary folder
# that is removed afterwards, whatever happens (each clone builds its own ~7 GB .venv; clones left behind once
# filled the disk that CI's checkout shares, and CI failed in setup).
#
#   bash scripts/fresh_clone_check.sh [LOG_DIR] [demo|test|both]    (default: /tmp/fresh-clone-logs, both)
#
# Writes LOG_DIR/demo.log and LOG_DIR/test.log, prints each log's last lines and exits with the first failure's code.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
logs="${1:-/tmp/fresh-clone-logs}"
what="${2:-both}"
case "$what" in demo | test | both) ;; *)
  echo "fresh_clone_check: unknown step '$what': give demo, test or both" >&2
  exit 2
  ;;
esac
mkdir -p "$logs"
clone="$(mktemp -d "${TMPDIR:-/tmp}/segkit-fresh.XXXXXX")"
trap 'rm -rf "$clone"' EXIT
git clone -q "$repo" "$clone" || exit 1
echo "[fresh] clone of $(git -C "$clone" log --oneline -1 | cut -c1-72) in $clone"
status=0
for step in demo test; do
  [ "$what" = both ] || [ "$what" = "$step" ] || continue
  start=$SECONDS
  (cd "$clone" && bash "scripts/$step.sh") >"$logs/$step.log" 2>&1
  rc=$?
  echo "[fresh] $step.sh: exit $rc after $((SECONDS - start)) s ($logs/$step.log):"
  tail -n 4 "$logs/$step.log"
  [ "$status" -ne 0 ] || status=$rc
done
exit "$status"
