#!/usr/bin/env bash
# Regenerates fixtures/ by driving a real Envoy (Istio-ingress-like config,
# PROXY protocol) with vpslens-testkit's deterministic traffic plan.
#
#   scripts/gen-fixtures.sh            # regenerate fixtures/ (needs envoy: scripts/install-deps.sh)
#   scripts/gen-fixtures.sh --check    # only verify fixtures/ against the plan
#   scripts/gen-fixtures.sh --out DIR  # write somewhere else
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ -z "${VPSLENS_ENVOY:-}" ]]; then
  # shellcheck source=scripts/find-envoy.sh
  if envoy_bin="$("$root/scripts/find-envoy.sh" 2>/dev/null)"; then
    export VPSLENS_ENVOY="$envoy_bin"
  fi
fi
exec cargo run --quiet -p vpslens-testkit --bin gen-fixtures -- "$@"
