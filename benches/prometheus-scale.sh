#!/usr/bin/env bash
# Fleet-scale export bench: what vpslens hands downstream at N active nodes.
#   NODES="3000 10000" LINES=1000000 SECONDS_SCRAPED=180 benches/prometheus-scale.sh
# For each N: gen-load (N nodes, 20% unregistered), `vpslens run` reading the whole file, a real
# Prometheus scraping /metrics (job vpslens) and /metrics/istio (job vpslens-istio) every 15 s
# (timeout 10 s, gzip like every Prometheus) for SECONDS_SCRAPED, then (STRESS=1) 30 concurrent
# gzip scrapes of /metrics/istio plus 20 clients that send GET and never read, held 40 s.
# Prints: vpslens VmHWM before the first scrape / after the Prometheus phase / after the stress
# phase, scrape durations (Prometheus' scrape_duration_seconds, max over the run), samples per
# scrape, one timed gzip fetch of each endpoint (bytes compressed and plain), Prometheus head
# series, RSS and VmHWM. VPSLENS=path/to/vpslens compares another build (e.g. the previous commit).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
NODES_LIST="${NODES:-3000}"
LINES="${LINES:-1000000}"
SCRAPED="${SECONDS_SCRAPED:-180}"
STRESS="${STRESS:-1}"
BASE="${BENCH_DIR:-target/bench-scale}"
PORT="${PORT:-19464}"
PROM_PORT="${PROM_PORT:-19090}"

if [[ -z "${VPSLENS:-}" ]]; then
  cargo build --release -q -p vpslens -p vpslens-benches
  VPSLENS=target/release/vpslens
fi
[[ -x target/release/gen-load ]] || cargo build --release -q -p vpslens-benches
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

status() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; } # MiB
prom() { curl -s --get "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(" ".join("%s=%s" % (s["metric"].get("job", "-"), s["value"][1]) for s in r) or "none")'; }
wait_for() { # what, command...
  local what="$1"; shift
  for _ in $(seq 1 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "timed out waiting for $what" >&2; exit 1
}

for N in $NODES_LIST; do
  DIR="$BASE/$N"
  mkdir -p "$DIR"
  if [[ "$(cat "$DIR/.params" 2>/dev/null)" != "$LINES $N" ]]; then
    target/release/gen-load "$DIR" "$LINES" "$N" 20 json
    echo "$LINES $N" > "$DIR/.params"
  fi
  cat > "$DIR/config.yaml" <<EOF
listen: 127.0.0.1:$PORT
registry: $PWD/$DIR/registry.json
sources: [$PWD/$DIR/access.log]
read_from: beginning
EOF
  "$VPSLENS" run --config "$DIR/config.yaml" > "$DIR/vpslens.log" 2>&1 &
  VPID=$!; PIDS+=("$VPID")
  wait_for "vpslens ready" curl -sf "http://127.0.0.1:$PORT/readyz"
  active=$(curl -s "http://127.0.0.1:$PORT/metrics" | grep -c '^vpslens_node_last_seen_timestamp_seconds{' || true)
  hwm0=$(status "$VPID" VmHWM)

  # One timed gzip fetch of each endpoint (as Prometheus asks), before Prometheus starts.
  for ep in /metrics /metrics/istio; do
    f="$DIR/body$(echo "$ep" | tr / _).gz"
    t=$(curl -s -H 'Accept-Encoding: gzip' -o "$f" -w '%{time_total}' "http://127.0.0.1:$PORT$ep")
    plain=$(gzip -dc < "$f" | wc -c)
    samples=$(gzip -dc < "$f" | grep -vc '^#' || true)
    istio=$(gzip -dc < "$f" | grep -c '^istio_' || true)
    printf 'N=%s fetch %-15s %6.3fs gzip=%s B plain=%s B samples=%s istio_samples/active_node=%s\n' \
      "$N" "$ep" "$t" "$(stat -c %s "$f")" "$plain" "$samples" \
      "$(python3 -c "print(round($istio / max($active, 1), 1))")"
  done
  hwm1=$(status "$VPID" VmHWM)

  PDIR="$DIR/prom"; rm -rf "$PDIR"; mkdir -p "$PDIR"
  cat > "$PDIR/prometheus.yml" <<EOF
global: {scrape_interval: 15s, scrape_timeout: 10s}
scrape_configs:
  - job_name: vpslens
    metrics_path: /metrics
    static_configs: [{targets: ['127.0.0.1:$PORT']}]
  - job_name: vpslens-istio
    metrics_path: /metrics/istio
    static_configs: [{targets: ['127.0.0.1:$PORT']}]
EOF
  prometheus --config.file="$PDIR/prometheus.yml" --storage.tsdb.path="$PDIR/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" > "$PDIR/log" 2>&1 &
  PPID_=$!; PIDS+=("$PPID_")
  wait_for prometheus curl -sf "http://127.0.0.1:$PROM_PORT/-/ready"
  sleep "$SCRAPED"
  echo "N=$N active_nodes=$active after ${SCRAPED}s of 15 s scrapes:"
  echo "  up:                          $(prom 'up')"
  echo "  scrape_duration_seconds max: $(prom "max_over_time(scrape_duration_seconds[${SCRAPED}s])")"
  echo "  scrape_duration_seconds avg: $(prom "avg_over_time(scrape_duration_seconds[${SCRAPED}s])")"
  echo "  scrape_samples_scraped:      $(prom 'scrape_samples_scraped')"
  echo "  prometheus head series:      $(curl -s "http://127.0.0.1:$PROM_PORT/metrics" | awk '/^prometheus_tsdb_head_series /{print $2}')"
  echo "  prometheus RSS / VmHWM:      $(status "$PPID_" VmRSS) / $(status "$PPID_" VmHWM) MiB"
  hwm2=$(status "$VPID" VmHWM)
  kill "$PPID_"; wait "$PPID_" 2>/dev/null || true

  hwm3="-"
  if [[ "$STRESS" == 1 ]]; then
    python3 - "$PORT" <<'EOF' &
import socket, sys, time
port = int(sys.argv[1])
socks = []
for _ in range(20):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /metrics/istio HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    socks.append(s)
time.sleep(40)
EOF
    SPID=$!
    codes=$(for _ in $(seq 1 30); do
      curl -s -H 'Accept-Encoding: gzip' -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$PORT/metrics/istio" &
    done; wait)
    wait "$SPID" || true
    echo "  30 concurrent gzip scrapes + 20 never-reading clients: http codes $(echo "$codes" | sort | uniq -c | tr -s ' ' | paste -sd' ')"
    echo "  $(curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^vpslens_scrapes_(rejected|cut)_total' | paste -sd' ')"
    hwm3=$(status "$VPID" VmHWM)
  fi
  echo "N=$N vpslens VmHWM MiB: before scrapes $hwm0, after one fetch each $hwm1, after Prometheus ${SCRAPED}s $hwm2, after stress $hwm3; RSS now $(status "$VPID" VmRSS)"
  kill "$VPID"; wait "$VPID" 2>/dev/null || true
done
