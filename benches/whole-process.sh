#!/usr/bin/env bash
# Whole-process bench: `vpslens replay` vs `mtail --one_shot` (the peer, Debian package mtail,
# program benches/mtail/istio_json.mtail) on the same generated, seeded Istio JSON log, plus
# vpslens on the same requests as Istio TEXT and CRI-wrapped JSON, and on all cores.
#   LINES=1000000 NODES=3000 UNREGISTERED_PCT=20 RUNS=3 benches/whole-process.sh
# Prints CPU seconds, lines per CPU-second and peak RSS (median of RUNS runs each, every run's
# CPU seconds beside it), and the ratios of the medians.
# With the defaults the log has 200,000 distinct unregistered client addresses.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LINES="${LINES:-1000000}"
NODES="${NODES:-3000}"
PCT="${UNREGISTERED_PCT:-20}"
DIR="${BENCH_DIR:-target/bench-load}"
# Single runs on a shared VM drift by ±15% (more across an hour); see run_once below.
RUNS="${RUNS:-3}"
CORES="$(nproc)"

cargo build --release -q -p vpslens -p vpslens-benches
gen() { # format file
  local stamp="$DIR/.$2.params"
  if [[ ! -f "$DIR/$2" || ! -f "$DIR/registry.json" || "$(cat "$stamp" 2>/dev/null)" != "$LINES $NODES $PCT v2" ]]; then
    target/release/gen-load "$DIR" "$LINES" "$NODES" "$PCT" "$1"
    echo "$LINES $NODES $PCT v2" > "$stamp"
  fi
}
gen json access.log
gen text access-text.log
gen cri access-cri.log

# Every program runs RUNS times and its median run (by CPU time) counts. Runs are interleaved
# round by round (vpslens, mtail, vpslens text, ...) so that every program samples the same
# stretch of a drifting VM, not one quiet and one busy minute.
run_once() { # name, command... — one run, appended to DIR/name.runs as "cpu wall rss"
  local name="$1"; shift
  /usr/bin/time -f '%U %S %M %e' -o "$DIR/$name.time" "$@" > "$DIR/$name.out" 2> "$DIR/$name.err"
  read -r user sys rss wall < "$DIR/$name.time"
  echo "$(echo "$user + $sys" | bc -l) $wall $rss" >> "$DIR/$name.runs"
}
report() { # name — prints the median run and writes DIR/name.result
  local name="$1" cpu wall rss
  read -r cpu wall rss < <(sort -n "$DIR/$name.runs" | sed -n "$(((RUNS + 1) / 2))p")
  local rate; rate="$(echo "$LINES / $cpu" | bc -l)"
  printf '%-16s cpu=%6.2fs wall=%6.2fs lines/cpu-s=%9.0f lines/wall-s=%9.0f peak_rss=%5.0fMiB  (median of %d; cpu-s per run: %s)\n' \
    "$name" "$cpu" "$wall" "$rate" "$(echo "$LINES / $wall" | bc -l)" "$(echo "$rss / 1024" | bc -l)" \
    "$RUNS" "$(cut -d' ' -f1 "$DIR/$name.runs" | paste -sd' ')"
  echo "$rate $rss" > "$DIR/$name.result"
}

# The registry is loaded from JSON: a fleet this size is exported by a script, and serde_json
# reads it ~4x faster than YAML (the same nodes; both loads are printed below).
replay() { # name threads file
  run_once "$1" target/release/vpslens replay --parse-threads "$2" \
    --registry "$DIR/registry.json" --metrics-out "$DIR/$1.prom" "$DIR/$3"
}
: > "$DIR/empty.log"
for f in yaml json; do
  NO_COLOR=1 VPSLENS_LOG=debug target/release/vpslens replay --registry "$DIR/registry.$f" \
    "$DIR/empty.log" 2>&1 >/dev/null | sed -n "s/.*registry loaded ms=\([0-9]*\).*/registry.$f load: \1 ms (wall, $NODES nodes)/p"
done

NAMES=(vpslens-json mtail vpslens-text vpslens-cri "vpslens-json-${CORES}t")
# One discarded run per input file first (page cache, CPU clocks): the first run after a pause
# was the slowest JSON run in both full runs of this script on 2026-11-23 (2.02 vs 1.48-1.62 s).
replay vpslens-json 1 access.log
replay vpslens-text 1 access-text.log
replay vpslens-cri 1 access-cri.log
for n in "${NAMES[@]}"; do rm -f "$DIR/$n.runs"; done
for ((r = 1; r <= RUNS; r++)); do
  replay vpslens-json 1 access.log
  run_once mtail mtail --one_shot --one_shot_format=prometheus --progs benches/mtail \
    --logs "$DIR/access.log" --logtostderr
  replay vpslens-text 1 access-text.log
  replay vpslens-cri 1 access-cri.log
  replay "vpslens-json-${CORES}t" "$CORES" access.log
done
for n in "${NAMES[@]}"; do report "$n"; done

read -r v_rate v_rss < "$DIR/vpslens-json.result"
read -r t_rate _ < "$DIR/vpslens-text.result"
read -r c_rate _ < "$DIR/vpslens-cri.result"
read -r m_rate m_rss < "$DIR/mtail.result"
printf 'ratio   throughput vpslens/mtail = %.1fx   peak RSS vpslens/mtail = %.3f\n' \
  "$(echo "$v_rate / $m_rate" | bc -l)" "$(echo "$v_rss / $m_rss" | bc -l)"
printf 'ratio   text/json = %.2f   cri/json = %.2f (lines per CPU-second, 1 thread)\n' \
  "$(echo "$t_rate / $v_rate" | bc -l)" "$(echo "$c_rate / $v_rate" | bc -l)"
# Same results whichever format or thread count (the registry-load timestamp aside).
for other in vpslens-text vpslens-cri "vpslens-json-${CORES}t"; do
  if ! diff -q <(grep -v _timestamp_seconds "$DIR/vpslens-json.prom" | grep -v '^vpslens_source_') \
    <(grep -v _timestamp_seconds "$DIR/$other.prom" | grep -v '^vpslens_source_') >/dev/null; then
    echo "WARNING: $other exposition differs from vpslens-json"
  fi
done
grep -E '^\(unregistered\)|^lines:' "$DIR/vpslens-json.out" || true
