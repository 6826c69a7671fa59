"""A git smart-HTTP server on 127.0.0.1 with basic authentication: `git http-backend` (CGI)
behind a small http.server, for tests of how credentials reach git."""

from __future__ import annotations

import base64
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

HTTP_BACKEND = Path("/usr/lib/git-core/git-http-backend")


@dataclass
class GitHttpServer:
    """Serves every bare repository under `root`; records what it saw of its clients."""

    root: Path
    username: str
    password: str
    port: int = 0
    requests: list[str] = field(default_factory=list)  # "METHOD path -> status"
    authorised: int = 0
    # Command lines of processes that held the password while a request was served (git's
    # arguments are visible to every user through `ps`): must stay empty.
    leaked_cmdlines: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, name: str, credentials: str | None = None) -> str:
        userinfo = f"{credentials}@" if credentials else ""
        return f"http://{userinfo}127.0.0.1:{self.port}/{name}"

    def record(self, line: str, authorised: bool) -> None:
        leaked = [
            " ".join(p.info["cmdline"] or [])
            for p in psutil.process_iter(["cmdline"])
            if self.password in " ".join(p.info["cmdline"] or [])
        ]
        with self._lock:
            self.requests.append(line)
            self.authorised += authorised
            self.leaked_cmdlines += leaked


def _handler(server: GitHttpServer) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{server.username}:{server.password}".encode()).decode(
        "ascii"
    )

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: failures are asserted on `server.requests`

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            body = self._body()
            authorised = self.headers.get("Authorization") == expected
            if not authorised:
                server.record(f"{self.command} {self.path} -> 401", False)
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="oet-test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            env = {
                "PATH": "/usr/bin:/bin",
                "GIT_PROJECT_ROOT": str(server.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": server.username,
                "REMOTE_ADDR": "127.0.0.1",
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            }
            done = subprocess.run(
                [str(HTTP_BACKEND)], input=body, env=env, capture_output=True, check=False
            )
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            status = 200
            headers: list[tuple[str, str]] = []
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            server.record(f"{self.command} {path} -> {status}", True)
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    return Handler


@contextmanager
def serve_git_http(root: Path, username: str, password: str) -> Iterator[GitHttpServer]:
    """Serve the bare repositories under `root` until the block ends."""
    if not HTTP_BACKEND.exists() or shutil.which("git") is None:
        raise RuntimeError(f"{HTTP_BACKEND} is missing (package git)")
    state = GitHttpServer(root, username, password)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = int(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, name="git-http", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
