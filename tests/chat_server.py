"""A real HTTP server speaking the OpenAI chat API, for tests of endpoint backends.

``ChatServer`` serves ``POST /v1/chat/completions`` on 127.0.0.1 with replies computed by
a Python function of the request, so tests can script a model that reads the crops or the
reasoning.
"""

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

from hf_faithful.mcot.backends import cut_at_stop


class ChatServer:
    """OpenAI-compatible chat completions server whose reply is ``respond(request_json)``.

    ``fail_with`` holds HTTP status codes returned (in order) before answering normally;
    ``models`` (served model names) answers ``GET /v1/models`` as vLLM does (else 404).
    """

    def __init__(self, respond, fail_with=(), models=None):
        self.respond = respond
        self.fail_with = list(fail_with)
        self.models = models
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._lock = threading.Lock()

    def __enter__(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if outer.models is None or self.path != "/v1/models":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                data = [{"id": name, "object": "model"} for name in outer.models]
                self._send(200, {"object": "list", "data": data})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.requests.append(body)
                    outer.headers.append(dict(self.headers))
                    failure = outer.fail_with.pop(0) if outer.fail_with else None
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if failure:
                    return self._send(failure, {"error": {"message": "try again"}})
                if "model" not in body or "messages" not in body:
                    return self._send(400, {"error": {"message": "model and messages required"}})
                text = cut_at_stop(outer.respond(body), body.get("stop"))
                self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def request_images(body) -> list[Image.Image]:
    """The images of a chat request, in order, decoded from their data URIs."""
    images = []
    for message in body["messages"]:
        content = message["content"]
        for part in content if isinstance(content, list) else []:
            if part["type"] == "image_url":
                data = part["image_url"]["url"].split(",", 1)[1]
                images.append(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
    return images


def request_text(body, roles=("user", "assistant", "system")) -> str:
    texts = []
    for message in body["messages"]:
        if message["role"] not in roles:
            continue
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts += [p["text"] for p in content if p["type"] == "text"]
    return "\n".join(texts)
