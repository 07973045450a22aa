"""Benchmark: redaction of command output, ordinary and hostile, at the gateway's output bound.

Run: ``.venv/bin/python tests/bench/bench_redaction.py``

Prints, for each input of 16 KiB (the most the gateway keeps), the median time of
``wingman.gateway.redaction.redact`` over 5 runs, beside the floor: 50 ms per 16 KiB on one
core of the CI machine. Every step is linear, so no input (ordinary kubectl output, a Secret
list, or output crafted to make a regular expression backtrack) should come near it. No test
asserts on these figures.
"""

from __future__ import annotations

import base64
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unit.gateway.test_redaction import HOSTILE
from wingman.gateway.redaction import redact

LIMIT = 16 * 1024
FLOOR_MS = 50.0


def _ordinary() -> dict[str, str]:
    secrets = json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s{i}"},
         "data": {"password": base64.b64encode(b"x" * 24).decode()}} for i in range(60)]},
        indent=4)
    pods = "NAME                   READY   STATUS    RESTARTS   AGE\n" + \
        "web-7d9c6b5d4f-x2x9k   1/1     Running   0          5m\n" * 300
    return {"secret-list-json": secrets, "get-pods": pods}


def main() -> None:
    inputs = {**_ordinary(), **HOSTILE}
    worst = 0.0
    print(f"{'input':28} {'bytes':>7} {'median ms':>10}   floor {FLOOR_MS:.0f} ms")
    for name, text in inputs.items():
        text = (text * (LIMIT // max(1, len(text)) + 1))[:LIMIT]
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            redact(text, ["capability-token-" + "x" * 40])
            runs.append((time.perf_counter() - start) * 1000)
        median = statistics.median(runs)
        worst = max(worst, median)
        print(f"{name:28} {len(text.encode()):>7} {median:>10.2f}")
    print(f"worst {worst:.2f} ms per 16 KiB; floor {FLOOR_MS:.0f} ms: "
          f"{'OK' if worst <= FLOOR_MS else 'ABOVE THE FLOOR'}")


if __name__ == "__main__":
    main()
