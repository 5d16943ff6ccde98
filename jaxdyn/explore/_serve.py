"""``jaxdyn serve``: a local, read-only web app over a results root.

Owns: the routes (the sweep list with live progress, each sweep's explorer built from its
current tables, their JSON), keeping every path inside the root, and stopping cleanly.
HTTP is the standard library's (``http.server.ThreadingHTTPServer``): no parsing here.

Routes (GET and HEAD only; anything else is 404, or 501 for another method)::

    /                          the sweep list (refreshes itself)
    /api/sweeps                its data: progress, ETA, diverged count per sweep
    /sweeps/<name>/            the explorer of one sweep (refreshes while it runs)
    /sweeps/<name>/data.json   its data
    /static/plotly.min.js      the chart library

A sweep is served only if its name is one of the root's sweep folders and the folder, its
``runs``/``curves`` folders and every part file resolve inside the root (a symbolic link
leading out of it: 403). No file is ever served by a path taken from the request.

Must not: write anything, take a sweep's lock, or import JAX.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jaxdyn import store
from jaxdyn.explore._data import explorer_data, sweep_summary
from jaxdyn.explore._report import plotly_js, render_page
from jaxdyn.results.files import QueryError, committed_parts, sweep_names

DEFAULT_PORT = 8765
REFRESH_MS = 1000  # the sweep list and a running sweep's explorer poll this often


class Forbidden(Exception):
    pass


def _inside(p: Path, root: Path) -> bool:
    try:
        p.resolve().relative_to(root)
        return True
    except (ValueError, OSError, RuntimeError):
        return False


class ExplorerApp:
    """The state of one server: its root, the library text, a cache of built pages' data
    keyed by each sweep's committed snapshot."""

    def __init__(self, root: str | Path, refresh_ms: int = REFRESH_MS):
        self.root = Path(root)
        self.root_real = self.root.resolve()
        self.refresh_ms = refresh_ms
        self._js: bytes | None = None
        self._cache: dict[str, tuple[tuple, bytes]] = {}
        self._summaries: dict[str, tuple[tuple, dict]] = {}
        self._building: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    @property
    def js(self) -> bytes:
        if self._js is None:
            self._js = plotly_js().encode("utf-8")
        return self._js

    def folder(self, name: str) -> Path | None:
        """The folder of sweep ``name``: None if there is no such sweep directly under the
        root; :class:`Forbidden` if it (or its tables) lead outside the root."""
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            return None
        if name not in sweep_names(self.root):
            return None
        folder = self.root / name
        if folder.is_symlink() or not _inside(folder, self.root_real):
            raise Forbidden(name)
        for sub in (store.RUNS, store.CURVES, store.MANIFEST):
            if (folder / sub).is_symlink() or not _inside(folder / sub, self.root_real):
                raise Forbidden(name)
        return folder

    def _snapshot_key(self, folder: Path) -> tuple:
        """What a sweep's pages depend on: its committed runs parts, its progress records
        and its write locks (a page is rebuilt only when one of them changed)."""
        runs, curves = committed_parts(folder)
        for p in (*runs, *curves):
            if p.is_symlink() and not _inside(p, self.root_real):
                raise Forbidden(folder.name)
        progress = sorted((p.name, p.stat().st_mtime) for p in
                          folder.glob(store.PROGRESS_GLOB))
        return tuple(p.name for p in runs), tuple(progress)

    def sweeps(self) -> list[dict]:
        out = []
        for n in sweep_names(self.root):
            try:
                folder = self.folder(n)
                if folder is None:
                    continue
                key = self._snapshot_key(folder)
                with self._lock:
                    hit = self._summaries.get(n)
                if hit and hit[0] == key and hit[1]["state"] == "complete":
                    out.append(hit[1])  # a finished sweep's counts cannot change
                    continue
                summary = sweep_summary(folder)
                with self._lock:
                    self._summaries[n] = (key, summary)
                out.append(summary)
            except Forbidden:
                continue
            except QueryError as e:
                out.append({"name": n, "error": str(e)})
        return out

    def data(self, folder: Path) -> bytes:
        """The explorer data of a sweep as JSON, rebuilt only when its snapshot changed."""
        with self._lock:
            build_lock = self._building.setdefault(folder.name, threading.Lock())
        with build_lock:  # one build per sweep at a time; the others wait for its result
            key = self._snapshot_key(folder)
            with self._lock:
                hit = self._cache.get(folder.name)
            if hit and hit[0] == key:
                return hit[1]
            data = explorer_data(folder)
            body = json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")
            with self._lock:
                self._cache[folder.name] = (key, body)
            return body

    def page(self, folder: Path) -> bytes:
        data = json.loads(self.data(folder))
        return render_page(data, script='<script src="/static/plotly.min.js"></script>',
                           live={"data": "data.json", "every_ms": self.refresh_ms}
                           ).encode("utf-8")


def _list_page(refresh_ms: int) -> bytes:
    page = (resources.files("jaxdyn.explore") / "templates" / "index.html").read_text(
        encoding="utf-8")
    return (page.replace("__REFRESH_MS__", str(int(refresh_ms)))
            .replace("__REFRESH_S__", f"{refresh_ms / 1000:g}").encode("utf-8"))


class Handler(BaseHTTPRequestHandler):
    app: ExplorerApp  # set on the subclass made by make_server
    server_version = "jaxdyn"

    def log_message(self, fmt, *args):  # quiet: one line per error only
        pass

    def _send(self, status: int, body: bytes, ctype: str, cache: str = "no-store"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: HTTPStatus, what: str = ""):
        msg = f"{status.value} {status.phrase}" + (f": {what}" if what else "")
        self._send(status.value, msg.encode(), "text/plain; charset=utf-8")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        # the path as sent, percent-decoded once; matched against fixed routes and the
        # root's sweep names only, never joined to a folder
        try:
            path = unquote(urlsplit(self.path).path, errors="strict")
        except (UnicodeDecodeError, ValueError):
            return self._error(HTTPStatus.NOT_FOUND)
        parts = path.split("/")
        try:
            if path == "/":
                return self._send(200, _list_page(self.app.refresh_ms),
                                  "text/html; charset=utf-8")
            if path == "/api/sweeps":
                body = json.dumps(self.app.sweeps(), default=str).encode()
                return self._send(200, body, "application/json")
            if path == "/static/plotly.min.js":
                return self._send(200, self.app.js, "text/javascript; charset=utf-8",
                                  cache="max-age=3600")
            if len(parts) == 3 and parts[1] == "sweeps" and parts[2]:
                self.send_response(301)  # /sweeps/NAME → /sweeps/NAME/
                self.send_header("Location", f"{self.path.split('?')[0]}/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if len(parts) == 4 and parts[1] == "sweeps" and parts[3] in ("", "data.json"):
                folder = self.app.folder(parts[2])
                if folder is None:
                    return self._error(HTTPStatus.NOT_FOUND, "no such sweep")
                if parts[3] == "data.json":
                    return self._send(200, self.app.data(folder), "application/json")
                return self._send(200, self.app.page(folder), "text/html; charset=utf-8")
            return self._error(HTTPStatus.NOT_FOUND)
        except Forbidden:
            return self._error(HTTPStatus.FORBIDDEN, "outside the results root")
        except QueryError as e:
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(e))
        except (BrokenPipeError, ConnectionResetError):
            return None


def make_server(root: str | Path = "results", host: str = "127.0.0.1",
                port: int = DEFAULT_PORT, refresh_ms: int = REFRESH_MS) -> ThreadingHTTPServer:
    """A server over ``root`` (not yet serving: call ``serve_forever``); port 0 picks a free
    port (``server.server_address``)."""
    root = Path(root)
    if not root.is_dir():
        raise QueryError(f"--out {root}: no such folder; run a sweep first ('jaxdyn run "
                         f"SWEEP.toml --out {root}') or name the results root")
    app = ExplorerApp(root, refresh_ms)
    handler = type("ExplorerHandler", (Handler,), {"app": app})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise QueryError(f"cannot listen on {host}:{port}: {e.strerror or e} (--port P, "
                         f"or --port 0 for any free port)") from None
    server.daemon_threads = True
    return server


def serve(root: str | Path = "results", host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          *, quiet: bool = False) -> None:
    """Serve the sweeps under ``root`` at http://host:port/ until Ctrl-C (read-only; bound
    to 127.0.0.1 unless ``host`` says otherwise)."""
    server = make_server(root, host, port)
    h, p = server.server_address[:2]
    if not quiet:
        print(f"serving the sweeps under {root} at http://{h}:{p}/ (read-only; Ctrl-C stops)",
              flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"note: --host {host}: other machines that can reach this one can read "
                  f"these sweeps", file=sys.stderr, flush=True)
    t0 = time.time()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        if not quiet:
            print(f"\nstopped after {time.time() - t0:.0f} s", file=sys.stderr)
    finally:
        server.server_close()
