#!/usr/bin/env bash
# Live mode's steady-state cost (issue 14): a real Envoy writes ~RATE lines/s for LOAD seconds
# (scraped every 15 s, as deployed), then LATENCY seconds under a 100 ms latency probe, then
# vpslens idles IDLE seconds. Prints vpslens' CPU per 100k live lines next to `vpslens replay`'s
# per-line CPU on the same lines (same session), idle CPU and completion → visible latency.
# Usage: RATE=2000 LOAD=60 LATENCY=15 IDLE=30 benches/live-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-2000} LOAD=${LOAD:-60} IDLE=${IDLE:-30} LATENCY=${LATENCY:-15}
cargo build --release --locked -q -p vpslens -p vpslens-benches --bin vpslens --bin live-cost
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "== live: $(date -u +%FT%TZ), $(nproc) CPUs, rate $RATE/s for ${LOAD}s, idle ${IDLE}s"
target/release/live-cost target/release/vpslens "$OUT" "$RATE" "$LOAD" "$IDLE" "$LATENCY" | tee "$OUT/live.txt"
LINES=$(sed -n 's/^LINES=//p' "$OUT/live.txt")
LINES_COST=$(sed -n 's/^LINES_COST=//p' "$OUT/live.txt")
CPU_LIVE=$(sed -n 's/^CPU_LIVE=//p' "$OUT/live.txt")
echo "== replay of the same $LINES lines (best of 3 runs, user+sys)"
best=""
for _ in 1 2 3; do
  TIMEFORMAT='%U %S'
  t=$( { time target/release/vpslens replay --registry "$OUT/registry.yaml" "$OUT/access.log" >/dev/null 2>&1; } 2>&1 )
  cpu=$(awk '{print $1 + $2}' <<<"$t")
  if [ -z "$best" ] || awk -v a="$cpu" -v b="$best" 'BEGIN{exit !(a<b)}'; then best=$cpu; fi
done
awk -v live="$CPU_LIVE" -v replay="$best" -v n="$LINES" -v nl="$LINES_COST" 'BEGIN{
  printf "replay CPU                  %.3f s (%.3f s per 100k lines)\n", replay, replay*100000/n;
  printf "live / replay CPU per line  %.2fx\n", (live/nl)/(replay/n) }'
