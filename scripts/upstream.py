#!/usr/bin/env python3
"""A stand-in webhook receiver: answers 200 {"received": true} and prints what it got.

Usage: upstream.py [PORT] [NAME]"""
import http.server
import json
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        queued = ""
        if self.headers.get("Hookgate-Delivery-Id"):
            queued = (f" delivery_id={self.headers.get('Hookgate-Delivery-Id')}"
                      f" attempt={self.headers.get('Hookgate-Attempt')}")
        print(f"{NAME} received {self.path} {len(body)} bytes "
              f"request_id={self.headers.get('X-Request-Id')} "
              f"xff={self.headers.get('X-Forwarded-For')}{queued}", flush=True)
        out = json.dumps({"received": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
NAME = sys.argv[2] if len(sys.argv) > 2 else "upstream"
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
