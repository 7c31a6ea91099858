#!/usr/bin/env bash
# Live mode's steady-state cost (issue 14): a real Envoy writes ~RATE lines/s for LOAD seconds
# (scraped every 15 s, as deployed), then LATENCY seconds under a 100 ms latency probe, then
# vpslens idles IDLE seconds. Prints vpslens' CPU per 100k live lines next to `vpslens replay`'s
# per-line CPU on the same lines (same session), idle CPU and completion → visible latency.
# Usage: RATE=2000 LOAD=60 LATENCY=15 IDLE=30 ROUNDS=1 benches/live-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-2000} LOAD=${LOAD:-60} IDLE=${IDLE:-30} LATENCY=${LATENCY:-15} ROUNDS=${ROUNDS:-1}
cargo build --release --locked -q -p vpslens -p vpslens-benches --bin vpslens --bin live-cost
# VPSLENS=path/to/vpslens measures another build (e.g. the previous commit) the same way.
VPSLENS=${VPSLENS:-target/release/vpslens}
# One live run plus replay of its lines; prints the run's ratio and appends it to $RATIOS.
RATIOS=$(mktemp)
one_round() {
  local out
  out=$(mktemp -d)
  echo "== live: $(date -u +%FT%TZ), $(nproc) CPUs, rate $RATE/s for ${LOAD}s, idle ${IDLE}s"
  target/release/live-cost "$VPSLENS" "$out" "$RATE" "$LOAD" "$IDLE" "$LATENCY" | tee "$out/live.txt"
  local lines lines_cost cpu_live best="" t cpu
  lines=$(sed -n 's/^LINES=//p' "$out/live.txt")
  lines_cost=$(sed -n 's/^LINES_COST=//p' "$out/live.txt")
  cpu_live=$(sed -n 's/^CPU_LIVE=//p' "$out/live.txt")
  echo "== replay of the same $lines lines (best of 3 runs, user+sys)"
  for _ in 1 2 3; do
    TIMEFORMAT='%U %S'
    t=$( { time "$VPSLENS" replay --registry "$out/registry.yaml" "$out/access.log" >/dev/null 2>&1; } 2>&1 )
    cpu=$(awk '{print $1 + $2}' <<<"$t")
    if [ -z "$best" ] || awk -v a="$cpu" -v b="$best" 'BEGIN{exit !(a<b)}'; then best=$cpu; fi
  done
  rm -rf "$out"
  awk -v live="$cpu_live" -v replay="$best" -v n="$lines" -v nl="$lines_cost" 'BEGIN{
    printf "replay CPU                  %.3f s (%.3f s per 100k lines)\n", replay, replay*100000/n;
    printf "live / replay CPU per line  %.2fx\n", (live/nl)/(replay/n) }'
  awk -v live="$cpu_live" -v replay="$best" -v n="$lines" -v nl="$lines_cost" \
    'BEGIN{ printf "%.2f\n", (live/nl)/(replay/n) }' >> "$RATIOS"
}
trap 'rm -f "$RATIOS"' EXIT
for _ in $(seq 1 "$ROUNDS"); do one_round; done
if [ "$ROUNDS" -gt 1 ]; then
  # Live CPU on a shared VM drifts by tens of percent over minutes; replay, a 0.1 s burst,
  # hardly moves. The median of several rounds is the figure to compare.
  sort -n "$RATIOS" | awk '{ v[NR] = $1 } END {
    printf "== live / replay over %d rounds: median %.2fx (min %.2fx, max %.2fx)\n", NR,
      (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[1], v[NR] }'
fi
