#!/usr/bin/env bash
# Accuracy of streamd end to end (docs/accuracy.md, issue 7), in one command:
#
#   1. simulate stations (catalog = test split, unknown music = val split), reused when present;
#      optionally a false-event soak with no catalog music at all;
#   2. index the test split into a fresh Redis catalog named after the model file's hash;
#   3a. offline: `streamd recognize --json` over every station file, then `streamd score`;
#   3b. daemon: `streamd run` on per-run Kafka topics, every station ingested at once with
#       `streamd ingest --fast`, the events topic collected (python -m streamd.eval.collect), scored.
#
#   bench/accuracy.sh [--stations 4] [--hours 1] [--soak-stations 0] [--soak-hours 1]
#                     [--seed 2026] [--jobs 2] [--weights FILE] [--out DIR]   (--stations 0: soak only)
#                     [--no-offline] [--no-daemon] [--reuse-catalog] [--publish]
#
# Needs `streamd services up` (Kafka + Redis) and the corpus (~/.cache/streamd/corpus).
# Outputs go to $OUT/run-<time>-<model>/ (default OUT=~/.cache/streamd/accuracy; never committed):
# score-*.txt (the tables), score-*.json, events-*.jsonl, accuracy-*.png, logs. --publish also
# copies the timelines to docs/img/accuracy-{offline,daemon}.png.
#
# The daemon runs with daemon.shed_lag_s and max_lag_s at their maximum (3600 s): fast ingestion
# stamps chunks with capture times in the future or recent past, and this run measures recognition,
# not load shedding (throughput is bench/daemon.py's question). Latency is in stream time.
set -euo pipefail
cd "$(dirname "$0")/.."

STATIONS=4 HOURS=1 SOAK_STATIONS=0 SOAK_HOURS=1 SEED=2026 JOBS=2 WEIGHTS="" PUBLISH=0
OFFLINE=1 DAEMON=1 REUSE_CATALOG=0 OUT=${OUT:-$HOME/.cache/streamd/accuracy}
CORPUS=${STREAMD_CORPUS:-$HOME/.cache/streamd/corpus}
PLOT_STREAM=sim-001
while [ $# -gt 0 ]; do
  case $1 in
    --stations) STATIONS=$2; shift 2 ;;
    --hours) HOURS=$2; shift 2 ;;
    --soak-stations) SOAK_STATIONS=$2; shift 2 ;;
    --soak-hours) SOAK_HOURS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --weights) WEIGHTS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-offline) OFFLINE=0; shift ;;
    --no-daemon) DAEMON=0; shift ;;
    --reuse-catalog) REUSE_CATALOG=1; shift ;;
    --publish) PUBLISH=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

STREAMD=${STREAMD:-.venv/bin/streamd}
PY=${PY:-.venv/bin/python}
[ -n "$WEIGHTS" ] && export STREAMD_MODEL__WEIGHTS=$WEIGHTS
WEIGHTS_FILE=$($PY -c 'from streamd.config import load_config; print(load_config().model.weights)')
# every step uses a copy: a training job may overwrite the original while the run goes on
mkdir -p "$OUT"
WEIGHTS_COPY=$(mktemp -p "$OUT" model.XXXXXX)
cp "$WEIGHTS_FILE" "$WEIGHTS_COPY"
MODEL_SHA=$(sha256sum "$WEIGHTS_COPY" | cut -c1-12)
CATALOG=acc-test-$MODEL_SHA
RUN=$OUT/run-$(date -u +%Y%m%dT%H%M%SZ)-$MODEL_SHA
mkdir -p "$RUN"
mv "$WEIGHTS_COPY" "$RUN/model.safetensors"
export STREAMD_MODEL__WEIGHTS=$RUN/model.safetensors
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$RUN/run.log" >&2; }
log "model $WEIGHTS_FILE (sha256 $MODEL_SHA), catalog $CATALOG, outputs in $RUN"
$STREAMD services status > /dev/null || { echo "Kafka/Redis are not up: run \`streamd services up\`" >&2; exit 2; }

# --- 1. Simulate (each set is reused when its truth.json exists) --------------------------------
simulate() {  # dir hours streams seed [extra simulate flags...]
  local dir=$1 hours=$2 streams=$3 seed=$4; shift 4
  if [ -f "$dir/truth.json" ]; then log "reusing $dir"; return; fi
  log "simulating $streams x $hours h -> $dir"
  $STREAMD simulate --catalog-dir "$CORPUS" --catalog-split test --unknown-dir "$CORPUS" --unknown-split val \
    --hours "$hours" --streams "$streams" --seed "$seed" --jobs "$JOBS" --format flac --out "$dir.tmp" "$@" \
    > "$RUN/simulate-$(basename "$dir").log"
  mv "$dir.tmp" "$dir"
}
SETS=()
if [ "$STATIONS" -gt 0 ]; then  # --stations 0: only the soak
  SIM=$OUT/sim-${STATIONS}x${HOURS}h-s$SEED
  simulate "$SIM" "$HOURS" "$STATIONS" "$SEED"
  SETS+=("$SIM")
fi
if [ "$SOAK_STATIONS" -gt 0 ]; then
  SOAK=$OUT/soak-${SOAK_STATIONS}x${SOAK_HOURS}h-s$((SEED + 1))
  simulate "$SOAK" "$SOAK_HOURS" "$SOAK_STATIONS" $((SEED + 1)) --weights unknown=0.7,talk=0.15,jingle=0.1,silence=0.05
  SETS+=("$SOAK")
fi

# --- 2. Index the catalog (test split) into a fresh catalog -------------------------------------
$PY -c "from pathlib import Path; from streamd.eval.collect import write_split_manifest as w; \
print(w(Path('$CORPUS'), 'test', Path('$RUN/catalog-test.csv')), 'tracks in the test split')" | tee -a "$RUN/run.log"
if [ "$REUSE_CATALOG" = 1 ] && $STREAMD catalog show "$CATALOG" --tracks 0 > "$RUN/index.txt" 2>&1; then
  log "reusing catalog $CATALOG (--reuse-catalog)"
else
  $STREAMD catalog delete "$CATALOG" --yes > /dev/null 2>&1 || true
  log "indexing into $CATALOG"
  $STREAMD index --catalog "$CATALOG" --manifest "$RUN/catalog-test.csv" --workers "$JOBS" 2> "$RUN/index.log" | tee "$RUN/index.txt"
fi

# --- 3a. Offline: streamd recognize per station file ------------------------------------------
score() {  # mode set-dir
  local mode=$1 dir=$2 name; name=$(basename "$dir" | cut -d- -f1)
  $STREAMD score --truth "$dir" --events "$RUN/events-$mode-$name.jsonl" --json "$RUN/score-$mode-$name.json" \
    --plot "$RUN/accuracy-$mode-$name.png" --plot-stream "$PLOT_STREAM" > "$RUN/score-$mode-$name.txt"
  log "scored $mode $name: $RUN/score-$mode-$name.txt"
}
if [ "$OFFLINE" = 1 ]; then
  for dir in "${SETS[@]}"; do
    name=$(basename "$dir" | cut -d- -f1)
    log "offline: recognizing $dir/sim-*.flac ($JOBS at a time)"
    mkdir -p "$RUN/offline-$name"
    start=$(date +%s)
    # shellcheck disable=SC2016
    ls "$dir"/sim-*.flac | STREAMD_MODEL__THREADS=1 xargs -P "$JOBS" -I{} sh -c \
      's=$(basename "$1" .flac); "$0" recognize "$1" --catalog "$2" --stream-id "$s" --json > "$3/$s.jsonl" 2> "$3/$s.log"' \
      "$STREAMD" {} "$CATALOG" "$RUN/offline-$name"
    log "offline $name took $(( $(date +%s) - start )) s"
    cat "$RUN/offline-$name"/sim-*.jsonl > "$RUN/events-offline-$name.jsonl"
    score offline "$dir"
  done
fi

# --- 3b. Daemon through Kafka, on topics and a consumer group of its own per set ------------------
DPID="" TAG=""
cleanup() {  # stop the daemon (SIGTERM: it commits and leaves) and delete the set's topics
  if [ -n "$DPID" ] && kill -0 "$DPID" 2> /dev/null; then kill "$DPID"; wait "$DPID" || true; fi
  DPID=""
  [ -n "$TAG" ] && $PY -c "from streamd.config import load_config; from streamd.kafka_io import delete_topics; \
delete_topics(load_config(), ['$TAG.audio', '$TAG.events', '$TAG.deadletter', '$TAG.state'])" || true
  TAG=""
}
trap cleanup EXIT
daemon_set() {  # set-dir
  local dir=$1 name start p f s pids=(); name=$(basename "$dir" | cut -d- -f1)
  TAG=streamd.acc-$(date +%s)-$$-$name
  export STREAMD_KAFKA__AUDIO_TOPIC=$TAG.audio STREAMD_KAFKA__EVENTS_TOPIC=$TAG.events \
    STREAMD_KAFKA__DEADLETTER_TOPIC=$TAG.deadletter STREAMD_KAFKA__GROUP_ID=$TAG \
    STREAMD_DAEMON__STATE_TOPIC=$TAG.state STREAMD_DAEMON__HTTP_PORT=0 \
    STREAMD_DAEMON__SHED_LAG_S=3600 STREAMD_DAEMON__MAX_LAG_S=3600 STREAMD_DAEMON__LOG_FORMAT=text
  log "daemon: starting on topics $TAG.* (catalog $CATALOG)"
  $STREAMD run --catalog "$CATALOG" > "$RUN/daemon-$name.log" 2>&1 &
  DPID=$!
  for _ in $(seq 240); do
    grep -q "daemon started" "$RUN/daemon-$name.log" && break
    kill -0 "$DPID" 2> /dev/null || { cat "$RUN/daemon-$name.log" >&2; exit 1; }
    sleep 0.5
  done
  start=$(date +%s)
  for f in "$dir"/sim-*.flac; do
    s=$(basename "$f" .flac)
    $STREAMD ingest "$f" --stream "$s" --fast > "$RUN/ingest-$name-$s.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  log "daemon: ingested $dir in $(( $(date +%s) - start )) s; waiting for the daemon to consume it"
  $PY -m streamd.eval.collect --wait-group "$TAG" --audio-topic "$TAG.audio" --daemon-pid "$DPID" \
    --events-topic "$TAG.events" --out "$RUN/events-daemon-$name.jsonl" 2>&1 | tee -a "$RUN/run.log"
  log "daemon $name took $(( $(date +%s) - start )) s from the first chunk ingested to the last event"
  cleanup
  score daemon "$dir"
}
if [ "$DAEMON" = 1 ]; then
  for dir in "${SETS[@]}"; do daemon_set "$dir"; done
fi

if [ "$PUBLISH" = 1 ]; then
  for mode in offline daemon; do
    [ -f "$RUN/accuracy-$mode-sim.png" ] && cp "$RUN/accuracy-$mode-sim.png" "docs/img/accuracy-$mode.png"
  done
  log "timelines copied to docs/img/"
fi
for f in "$RUN"/score-*.txt; do echo "== $f"; sed -n '1,30p' "$f"; done
log "done: outputs in $RUN"
