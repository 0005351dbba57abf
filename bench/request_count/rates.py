"""Kafka requests a second per `serve` process over its busiest 16 s (see sitecustomize.py)."""

import glob
import json
import os
import sys

folder = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
    "TOUCHPOINT_REQUEST_COUNT_DIR", "/tmp/touchpoint-requests")
for path in sorted(glob.glob(os.path.join(folder, "*.jsonl"))):
    rows = [json.loads(line) for line in open(path)]
    if len(rows) < 9:
        continue
    i = max(range(len(rows) - 8), key=lambda j: rows[j + 8]["cpu"] - rows[j]["cpu"])
    a, b = rows[i], rows[i + 8]
    dt = b["t"] - a["t"]
    rates = {k: (v - a["counts"].get(k, 0)) / dt for k, v in sorted(b["counts"].items())}
    print(f"{b['service']:10s} CPU {100 * (b['cpu'] - a['cpu']) / dt:4.1f} %  "
          + "  ".join(f"{k} {v:.1f}/s" for k, v in rates.items() if v > 0.05))
