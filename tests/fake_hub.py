"""A Hugging Face Hub on 127.0.0.1 for download tests: huggingface_hub's own client code runs
unchanged against it (HF_ENDPOINT), so only the network end is stood in for.

It answers what snapshot_download and hf_hub_download ask: the repo's revision
(/api/models/ID/revision/REV), its file tree (/api/models/ID/tree/SHA), and each file's HEAD and
GET (/ID/resolve/SHA/NAME). File bodies go out in small chunks with a pause between them, so a
download takes long enough for progress to be seen; `hold` names a file whose second half waits
until `release()`; a GET of a file named in `fail` answers 500.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]], chunk: int = 64 * 1024, pause_s: float = 0.0,
                 hold: str | None = None, fail: frozenset[str] = frozenset()) -> None:
        self.repos, self.chunk, self.pause_s, self.hold, self.fail = repos, chunk, pause_s, hold, fail
        self.released = threading.Event()
        self.holding = threading.Event()
        self.gets: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def release(self) -> None:
        self.released.set()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _json(self, payload, status: int = 200) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _missing(self, code: str = "RepoNotFound") -> None:
                body = b'{"error": "Repository not found"}'
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _route(self):
                path = unquote(urlparse(self.path).path)
                if path.startswith("/api/models/"):
                    rest = path[len("/api/models/"):]
                    for repo in hub.repos:
                        if rest.startswith(repo + "/"):
                            return "api", repo, rest[len(repo) + 1:]
                    return "api", None, rest
                for repo in hub.repos:
                    prefix = f"/{repo}/resolve/"
                    if path.startswith(prefix):
                        return "file", repo, path[len(prefix):].split("/", 1)[1]
                return None, None, path

            def do_GET(self) -> None:
                kind, repo, rest = self._route()
                if repo is None:
                    return self._missing()
                files = hub.repos[repo]
                if kind == "api" and rest.startswith("revision/"):
                    return self._json({"id": repo, "modelId": repo, "sha": SHA, "private": False,
                                       "siblings": [{"rfilename": name} for name in files]})
                if kind == "api" and rest.startswith("tree/"):
                    return self._json([{"type": "file", "path": name, "size": len(body),
                                        "oid": hashlib.sha1(body).hexdigest()} for name, body in files.items()])
                if kind == "file" and rest in files:
                    return self._send_file(repo, rest, files[rest])
                return self._missing("EntryNotFound")

            def do_HEAD(self) -> None:
                kind, repo, rest = self._route()
                if kind != "file" or repo is None or rest not in hub.repos[repo]:
                    return self._missing("EntryNotFound")
                body = hub.repos[repo][rest]
                self.send_response(200)
                self._file_headers(body)
                self.end_headers()

            def _file_headers(self, body: bytes) -> None:
                self.send_header("X-Repo-Commit", SHA)
                self.send_header("ETag", f'"{hashlib.sha1(body).hexdigest()}"')
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")

            def _send_file(self, repo: str, name: str, body: bytes) -> None:
                hub.gets.append(name)
                if name in hub.fail:
                    return self._json({"error": "Internal Error"}, status=500)
                self.send_response(200)
                self._file_headers(body)
                self.end_headers()
                for start in range(0, len(body), hub.chunk):
                    if name == hub.hold and start >= len(body) // 2 and not hub.released.is_set():
                        hub.holding.set()
                        hub.released.wait(30)
                    self.wfile.write(body[start:start + hub.chunk])
                    self.wfile.flush()
                    if hub.pause_s:
                        time.sleep(hub.pause_s)

        return Handler

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def hub_client(monkeypatch, hub: FakeHub, cache_dir):
    """This process's huggingface_hub pointed at `hub`, online, with its cache in cache_dir
    (constants are read at import time, so they are patched, as HF_ENDPOINT would set them)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", hub.chunk)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    yield hub


def hub_env(hub: FakeHub, home) -> dict[str, str]:
    """The environment of a run process that downloads from `hub` into its own cache."""
    return {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(home),
            "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
