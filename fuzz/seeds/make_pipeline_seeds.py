#!/usr/bin/env python3
"""Writes fuzz/seeds/pipeline/: admitted and nearly admitted requests in the pipeline target's
input format (a control byte, then X-Forwarded-For, X-ImgGo-Signature, Webhook-Id and
Content-Length separated by 0xff, then the body), so that the fuzzer starts past the checks
rather than having to find `"event":"job.completed"` by chance. Control byte 1: signed by the
target, POST, the route's path, from the trusted proxy, over TLS."""
import json
import os

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipeline")
os.makedirs(here, exist_ok=True)

admitted = {"event": "job.completed", "job_id": "job_1", "status": "completed"}
bodies = {
    "admitted": admitted,
    "other_event": {**admitted, "event": "job.failed"},
    "numeric_job_id": {**admitted, "job_id": 7},
    "no_job_id": {"event": "job.completed"},
    "nested": {**admitted, "result": {"url": "https://cdn.example/a.png", "tags": ["a", "b"]}},
    "unicode": {**admitted, "job_id": "j\u00e9\u2603"},
}
for name, body in bodies.items():
    raw = json.dumps(body, separators=(",", ":")).encode()
    for variant, (control, xff, webhook_id) in {
        "": (1, b"203.0.113.5", b"msg_1"),
        "_no_webhook_id": (1, b"203.0.113.5", b""),
        "_outside_allowlist": (1, b"198.51.100.1", b"msg_1"),
        "_unsigned": (0, b"203.0.113.5", b"msg_1"),
    }.items():
        parts = [xff, b"", webhook_id, str(len(raw)).encode(), raw]
        with open(os.path.join(here, name + variant), "wb") as f:
            f.write(bytes([control]) + b"\xff".join(parts))
