"""A misbehaving teacher server for the fault tests: a real HTTP process in front of a real vLLM
server that forwards requests or, as its control file says, fails them.

    python tests/faultproxy.py UPSTREAM_SOCKET PORT CONTROL_JSON REQUEST_LOG

UPSTREAM_SOCKET is the Unix socket of the vLLM server llm2llm started (its base URL is /v1 on it).

The control file is read on every request: {"mode": ..., "first": N, "after": N}
  ok        forward to the vLLM server
  error     HTTP 500 (for the first `first` completion requests only, if given)
  hang      never answer
  empty     forward, then blank every completion's text
  garbage   forward, then replace every completion's text with noise
  malformed HTTP 200 with an HTML body
  die       forward the first `after` completion requests, exit at once on the next (a crashed server)
Every completion request is logged as one line in REQUEST_LOG (how many attempts the client made).
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from llm2llm.vllm_server import UnixHTTPConnection

UPSTREAM, PORT, CONTROL, REQUEST_LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
counter = {"completions": 0}
lock = threading.Lock()


def control() -> dict:
    with open(CONTROL) as f:
        return json.load(f)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, body: bytes | None) -> tuple[int, bytes]:
        connection = UnixHTTPConnection(UPSTREAM, timeout=600)
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def do_GET(self):
        self._reply(*self._forward(None))

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        settings = control()
        mode = settings["mode"]
        with lock:
            counter["completions"] += 1
            number = counter["completions"]
            with open(REQUEST_LOG, "a") as f:
                f.write(json.dumps({"n": number, "mode": mode, "t": time.time()}) + "\n")
            if mode == "die" and number > settings.get("after", 0):
                os._exit(1)
        if mode == "error" and number <= settings.get("first", number):
            return self._reply(500, b'{"error": {"message": "injected failure", "type": "server_error"}}')
        if mode == "hang":
            time.sleep(3600)
            return
        if mode == "malformed":
            return self._reply(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        status, answer = self._forward(body)
        if status == 200 and mode in ("empty", "garbage"):
            payload = json.loads(answer)
            for choice in payload["choices"]:
                choice["text"] = "" if mode == "empty" else "\x00}{ ####\ufffd ][ \u202e"
            answer = json.dumps(payload).encode()
        self._reply(status, answer)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    print(f"fault proxy on 127.0.0.1:{PORT} -> {UPSTREAM}", flush=True)
    server.serve_forever()
