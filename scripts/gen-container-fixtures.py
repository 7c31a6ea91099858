#!/usr/bin/env python3
"""Wraps fixtures/access-istio-json.log into Kubernetes container-log framing.

Writes
  fixtures/container/cri-0.log     CRI (containerd/CRI-O): `<RFC3339Nano> <stream> <P|F> <msg>`
  fixtures/container/docker-0.log  docker json-file: {"log": "...\\n", "stream": ..., "time": ...}

Every access-log line is split into chunks of at most CHUNK bytes (containerd splits at
16 KiB; the fixture uses a small size so that most lines arrive as several `P` chunks and one
`F` chunk). Envoy's own stderr lines are interleaved, as in the istio-proxy container. The
output is deterministic; `collector/tests/container_fixtures.rs` checks that reassembly gives
back the original JSON lines byte for byte.
"""
import json
import os

CHUNK = 200
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SRC = os.path.join(ROOT, "fixtures", "access-istio-json.log")
OUT = os.path.join(ROOT, "fixtures", "container")


def stamp(i):
    # RFC3339Nano as Go prints it: trailing zeros of the fraction are trimmed, so widths vary.
    nanos = (i * 37_000_001) % 1_000_000_000
    frac = f"{nanos:09d}".rstrip("0")
    secs = 15 + i // 1000
    return f"2026-11-23T05:38:{secs:02d}" + (f".{frac}" if frac else "") + "Z"


def main():
    with open(SRC, encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    os.makedirs(OUT, exist_ok=True)
    cri, docker = [], []
    n = 0
    for idx, line in enumerate(lines):
        if idx % 25 == 0:
            msg = f"[2026-11-23 05:38:15.{idx:03d}][1][warning][config] envoy stderr line {idx}"
            cri.append(f"{stamp(n)} stderr F {msg}")
            docker.append(json.dumps({"log": msg + "\n", "stream": "stderr", "time": stamp(n)}))
            n += 1
        chunks = [line[i:i + CHUNK] for i in range(0, len(line), CHUNK)] or [""]
        for j, c in enumerate(chunks):
            last = j == len(chunks) - 1
            cri.append(f"{stamp(n)} stdout {'F' if last else 'P'} {c}")
            docker.append(json.dumps({"log": c + ("\n" if last else ""), "stream": "stdout", "time": stamp(n)}))
            n += 1
    with open(os.path.join(OUT, "cri-0.log"), "w", encoding="utf-8") as f:
        f.write("\n".join(cri) + "\n")
    with open(os.path.join(OUT, "docker-0.log"), "w", encoding="utf-8") as f:
        f.write("\n".join(docker) + "\n")


if __name__ == "__main__":
    main()
