#!/usr/bin/env python3
"""Writes N distinct, correctly signed ImgGo deliveries for the load test, one per line:
<hex X-ImgGo-Signature> TAB <body>. PREFIX makes job ids distinct across files."""
import hashlib
import hmac
import json
import sys

n, secret, out = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
prefix = sys.argv[4] if len(sys.argv) > 4 else "job"
with open(out, "w") as f:
    for i in range(n):
        body = json.dumps({
            "event": "job.completed", "job_id": f"{prefix}_{i:08d}", "status": "completed",
            "created_at": "2026-11-28T12:00:00Z",
            "result": {"url": f"https://cdn.imggo.example/{i}.png", "width": 1024, "height": 768,
                       "format": "png", "bytes": 123456},
        }, separators=(",", ":"))
        sig = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
        f.write(f"{sig}\t{body}\n")
