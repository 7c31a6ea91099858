#!/usr/bin/env bash
# What a checkpoint costs at fleet scale (issue 14): `vpslens run` reads a gen-load file of N
# active nodes (20% unregistered) with a state dir, then ROUNDS times appends 100 lines and waits
# for the next periodic checkpoint (`checkpoint_interval_seconds`, default 5). Prints the
# checkpoint's size and the tailer thread's CPU per round (100 lines + one checkpoint:
# serialising every counter, writing, fsync, rename), from /proc/<pid>/task/<tid>/schedstat.
#   NODES=3000 LINES=300000 ROUNDS=8 benches/checkpoint-cost.sh
# VPSLENS=path/to/vpslens measures another build (e.g. the previous commit) on the same files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N="${NODES:-3000}"
LINES="${LINES:-300000}"
ROUNDS="${ROUNDS:-8}"
PORT="${PORT:-19465}"
DIR="${BENCH_DIR:-target/bench-checkpoint}/$N"
if [[ -z "${VPSLENS:-}" ]]; then
  cargo build --release -q --locked -p vpslens -p vpslens-benches
  VPSLENS=target/release/vpslens
fi
[[ -x target/release/gen-load ]] || cargo build --release -q --locked -p vpslens-benches
mkdir -p "$DIR"
if [[ "$(cat "$DIR/.params" 2>/dev/null)" != "$LINES $N" ]]; then
  target/release/gen-load "$DIR" "$LINES" "$N" 20 json
  echo "$LINES $N" > "$DIR/.params"
fi
cp "$DIR/access.log" "$DIR/followed.log"
rm -rf "$DIR/state"
cat > "$DIR/config.yaml" <<EOF
listen: 127.0.0.1:$PORT
registry: $PWD/$DIR/registry.json
sources: [$PWD/$DIR/followed.log]
read_from: beginning
state_dir: $PWD/$DIR/state
EOF
"$VPSLENS" run --config "$DIR/config.yaml" > "$DIR/vpslens.log" 2>&1 &
VPID=$!
trap 'kill $VPID 2>/dev/null || true' EXIT
metric() { curl -sf "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
for _ in $(seq 1 600); do
  [[ "$(metric vpslens_checkpoint_writes_total 2>/dev/null || true)" -ge 1 ]] 2>/dev/null && break
  sleep 0.2
done
TID=$(grep -l '^vpslens-tail' /proc/$VPID/task/*/comm | head -1 | cut -d/ -f5)
cpu_ns() { awk '{ print $1 }' "/proc/$VPID/task/$TID/schedstat"; }
echo "== checkpoint cost: $(date -u +%FT%TZ), $(nproc) CPUs, $N nodes, $VPSLENS"
results=()
for r in $(seq 1 "$ROUNDS"); do
  c0=$(metric vpslens_checkpoint_writes_total)
  a=$(cpu_ns)
  head -n 100 "$DIR/access.log" >> "$DIR/followed.log"
  until [[ "$(metric vpslens_checkpoint_writes_total)" -gt "$c0" ]]; do sleep 0.1; done
  b=$(cpu_ns)
  ms=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
  results+=("$ms")
  echo "round $r: tailer CPU ${ms} ms (100 lines + 1 checkpoint)"
done
printf 'checkpoint.json             %s bytes\n' "$(stat -c %s "$DIR/state/checkpoint.json")"
printf '%s\n' "${results[@]}" | sort -n | awk '{ v[NR] = $1 } END {
  printf "tailer CPU per round        median %.1f ms, min %.1f, max %.1f (%d rounds)\n",
    (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[1], v[NR], NR }'
