"""Bench-only: count each `touchpoint serve` process's Kafka requests by type.

    PYTHONPATH=bench/request_count .venv/bin/python bench/pipeline.py ...
    .venv/bin/python bench/request_count/rates.py   # rates over each process's busiest 16 s

Wraps aiokafka's client `send` and appends the cumulative counts and the process's CPU
every 2 s to $TOUCHPOINT_REQUEST_COUNT_DIR (default /tmp/touchpoint-requests)/<pid>.jsonl.
Not part of the services: loaded only through PYTHONPATH, and only in `serve` processes.
"""

import collections
import json
import os
import sys
import threading
import time

if "serve" in sys.argv:
    import aiokafka.client

    _counts = collections.Counter()
    _send = aiokafka.client.AIOKafkaClient.send

    def _counting_send(self, node_id, request, *args, **kwargs):
        _counts[type(request).__name__.removesuffix("Request")] += 1
        return _send(self, node_id, request, *args, **kwargs)

    aiokafka.client.AIOKafkaClient.send = _counting_send
    _dir = os.environ.get("TOUCHPOINT_REQUEST_COUNT_DIR", "/tmp/touchpoint-requests")
    os.makedirs(_dir, exist_ok=True)
    _path = os.path.join(_dir, f"{os.getpid()}.jsonl")
    _service = sys.argv[sys.argv.index("serve") + 1] if len(sys.argv) > 2 else "?"

    def _dump() -> None:
        while True:
            time.sleep(2)
            with open(_path, "a") as out:
                out.write(json.dumps({"t": time.time(), "service": _service,
                                      "cpu": sum(os.times()[:2]), "counts": dict(_counts)})
                          + "\n")

    threading.Thread(target=_dump, daemon=True).start()
