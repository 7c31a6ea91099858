#!/usr/bin/env bash
# Whole-process bench: vpslens replay vs mtail (peer) on the same generated Istio JSON log.
#   LINES=1000000 NODES=3000 UNREGISTERED_PCT=20 benches/whole-process.sh
# Prints CPU seconds, lines per CPU-second and peak RSS for both, and the ratios.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LINES="${LINES:-1000000}"
NODES="${NODES:-3000}"
PCT="${UNREGISTERED_PCT:-20}"
DIR="${BENCH_DIR:-target/bench-load}"

cargo build --release -q -p vpslens -p vpslens-benches
if [[ ! -f "$DIR/access.log" || "$(wc -l < "$DIR/access.log")" -ne "$LINES" ]]; then
  target/release/gen-load "$DIR" "$LINES" "$NODES" "$PCT"
fi

measure() { # name, command...
  local name="$1"; shift
  /usr/bin/time -f '%U %S %M %e' -o "$DIR/$name.time" "$@" > "$DIR/$name.out" 2> "$DIR/$name.err"
  read -r user sys rss wall < "$DIR/$name.time"
  local cpu; cpu="$(echo "$user + $sys" | bc -l)"
  local rate; rate="$(echo "$LINES / $cpu" | bc -l)"
  printf '%-8s cpu=%.2fs wall=%.2fs lines/cpu-s=%.0f peak_rss=%.0fMiB\n' "$name" "$cpu" "$wall" "$rate" "$(echo "$rss / 1024" | bc -l)"
  echo "$rate $rss" > "$DIR/$name.result"
}

measure vpslens target/release/vpslens replay --registry "$DIR/registry.yaml" \
  --metrics-out "$DIR/vpslens.prom" "$DIR/access.log"
measure mtail mtail --one_shot --one_shot_format=prometheus --progs benches/mtail \
  --logs "$DIR/access.log" --logtostderr

read -r v_rate v_rss < "$DIR/vpslens.result"
read -r m_rate m_rss < "$DIR/mtail.result"
printf 'ratio   throughput vpslens/mtail = %.1fx   peak RSS vpslens/mtail = %.3f\n' \
  "$(echo "$v_rate / $m_rate" | bc -l)" "$(echo "$v_rss / $m_rss" | bc -l)"
grep -E '^\(unregistered\)|^lines:' "$DIR/vpslens.out" || true
