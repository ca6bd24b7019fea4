"""A slow stand-in for vLLM's OpenAI server, a real process: it takes the server's flags, waits
``FAKE_SERVER_DELAY_S`` before it listens (a model loading), then answers ``/v1/models`` and
one-token ``/v1/completions``. It says ``fake server started`` on its first line (the start count)
and starts a child of its own (an EngineCore) in its process group. Used by the race tests, where
what matters is how many servers start and which processes are left, not what they answer."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = "fake server started"


def handler(model: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def answer(self, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self.answer({"data": [{"id": model, "root": model, "max_model_len": 256}]})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.answer({"choices": [{"text": "a"}]})

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args, _ = parser.parse_known_args()
    print(STARTED, os.getpid(), flush=True)
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    time.sleep(float(os.environ.get("FAKE_SERVER_DELAY_S", "5")))
    server = ThreadingHTTPServer((args.host, args.port), handler(args.model))
    try:
        server.serve_forever()
    finally:
        engine.kill()


if __name__ == "__main__":
    main()
