#!/usr/bin/env bash
# `make demo`: the whole system on one machine, in one command, leaving nothing running.
#   installs uv if missing and what running needs (no dev tools), starts the four services on free ports with embedded
#   defaults (SQLite, local files, the offline `local` generation provider, the `outbox` platform), connects the
#   outbox, creates examples/local-demo.yaml, runs it with live progress, prints where the MP4 and the outbox
#   post landed and when the next run is scheduled, then stops everything.
# Environment: CONTENTPIPE_DEMO_DIR (default .contentpipe/demo, wiped at start), CONTENTPIPE_DEMO_KEEP=1 to leave
# the services running afterwards (stop them with `contentpipe --data-dir DIR down`).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR="${CONTENTPIPE_DEMO_DIR:-.contentpipe/demo}"
STARTED=$SECONDS
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
[[ -t 1 ]] || say() { printf '\n==> %s\n' "$*"; }

if command -v uv >/dev/null 2>&1; then
  UV=(uv)
else
  say "installing uv (pip install uv)"
  python3 -m pip install --quiet uv 2>/dev/null || python3 -m pip install --quiet --user uv
  if command -v uv >/dev/null 2>&1; then UV=(uv); else UV=(python3 -m uv); fi
fi
# Only what running needs: the four services and the CLI, without the development group (test, lint, type and
# deploy tooling; `make test` installs those). --inexact leaves a developer's full environment as it is.
say "installing what the services and the CLI need (uv sync --no-dev)"
"${UV[@]}" sync --frozen --no-dev --inexact --compile-bytecode  # compiled once: every service start is faster
INSTALLED=$SECONDS

CP=("${UV[@]}" run --frozen --no-sync contentpipe --data-dir "$DATA_DIR")
export CONTENTPIPE_DATA_DIR="$DATA_DIR"
unset CONTENTPIPE_TOKEN CONTENTPIPE_GENERATION_ADDR CONTENTPIPE_OAUTH_ADDR CONTENTPIPE_PIPELINES_ADDR \
  CONTENTPIPE_SCHEDULER_ADDR

# A clean slate: stop what an interrupted demo may have left, then start from an empty data dir.
"${CP[@]}" down >/dev/null 2>&1 || true
rm -rf "$DATA_DIR"

cleanup() {
  local code=$?
  if [[ "${CONTENTPIPE_DEMO_KEEP:-0}" == "1" && $code -eq 0 ]]; then
    say "services keep running; stop them with: uv run contentpipe --data-dir $DATA_DIR down"
  else
    say "stopping the services"
    "${CP[@]}" down || true
  fi
  exit $code
}
trap cleanup EXIT

say "starting generation, oauth, pipelines and scheduler (data in $DATA_DIR)"
"${CP[@]}" up --detach --ports auto

say "connecting the outbox (a local folder standing in for a social platform)"
"${CP[@]}" connections connect outbox

say "creating the pipeline from examples/local-demo.yaml"
PIPELINE="$("${CP[@]}" pipelines create -f examples/local-demo.yaml -o name)"
echo "created $PIPELINE"

say "running it"
RUN="$("${CP[@]}" pipelines run "$PIPELINE" -o name)"
set +e
"${CP[@]}" runs watch "$RUN"
WATCH=$?
set -e
if [[ $WATCH -ne 0 ]]; then
  echo "the run did not succeed; the service logs are in $DATA_DIR/logs" >&2
  exit "$WATCH"
fi

say "done in $((SECONDS - INSTALLED)) s (plus $((INSTALLED - STARTED)) s checking dependencies)"
if [[ "${CONTENTPIPE_DEMO_KEEP:-0}" != "1" ]]; then
  echo "  to explore afterwards: CONTENTPIPE_DEMO_KEEP=1 make demo, then uv run contentpipe --data-dir $DATA_DIR runs list"
fi
