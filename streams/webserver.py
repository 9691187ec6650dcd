"""The worker's web server: a few GET pages served from threads, never from the event loop.

The worker's event loop can be held for a long time by a dependency: the table store's
calls are synchronous in Faust, and during a Redis outage they retry with sleeps on the
loop (measured: 141 s and 231 s without an answer from Faust's own web server). Probes
and scrapes must be answered exactly then, so the pages are served by the standard
library's ``ThreadingHTTPServer`` in a thread of its own (a thread per request), and
every page is a plain function that reads state the loop publishes: it never awaits and
never calls Redis or Kafka.

Faust's aiohttp web server is disabled (``streams.app``): this server takes its host and
port, and Faust's table views (``/table/<name>/<key>/``: any card's raw state) are
served nowhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

logger = logging.getLogger(__name__)

#: Seconds a client may take to send its request: a stuck client holds one thread only.
REQUEST_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class Page:
    """A response: status, content type and body."""

    status: int
    content_type: str
    body: bytes


#: A page's function: called in a server thread for every GET of its path.
Route = Callable[[], Page]


class WebServer:
    """GET routes served by a ``ThreadingHTTPServer`` in a daemon thread.

    Routes are added before :meth:`start`; a route's function runs in the request's
    thread, so it must only read state that is safe to read from another thread
    (immutable values published by the event loop, prometheus-client's registry).

    Args:
        host: Address to bind (the worker's ``web_host``).
        port: Port to bind (``web_port``; 0 picks a free one, see :attr:`port`).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self._port = port
        self._routes: dict[str, Route] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def routes(self) -> Mapping[str, Route]:
        """The paths served, with their functions."""
        return dict(self._routes)

    @property
    def port(self) -> int:
        """The bound port once started (the configured one before)."""
        return self._server.server_address[1] if self._server is not None else self._port

    def route(self, path: str, page: Route) -> None:
        """Serve ``page()`` at ``GET path``.

        Raises:
            ValueError: The path is served already, or the server runs.
        """
        if self._server is not None:
            raise ValueError("routes are fixed once the server runs")
        if path in self._routes:
            raise ValueError(f"{path} is served already")
        self._routes[path] = page

    def start(self) -> None:
        """Bind and serve in a daemon thread (raises ``OSError`` if the port is taken)."""
        routes = dict(self._routes)

        class Handler(_Handler):
            pages = routes

        server = ThreadingHTTPServer((self.host, self._port), Handler)
        server.daemon_threads = True  # a hung client never holds the process at exit
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="web", daemon=True
        )
        self._thread.start()
        logger.info("web server on http://%s:%d (%s)", self.host, self.port, ", ".join(routes))

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    """Answers GET (and HEAD) of the known paths; 404 for others, 405 for other methods."""

    pages: Mapping[str, Route] = {}
    timeout = REQUEST_TIMEOUT_S
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        """Serve a page."""
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        """Serve a page's headers."""
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        route = self.pages.get(path)
        if route is None:
            page = Page(404, "text/plain; charset=utf-8", b"not found\n")
        else:
            try:
                page = route()
            except Exception:
                logger.exception("web page %s failed", path)
                page = Page(500, "text/plain; charset=utf-8", b"internal error\n")
        self.send_response(page.status)
        self.send_header("Content-Type", page.content_type)
        self.send_header("Content-Length", str(len(page.body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(page.body)

    def _refuse(self) -> None:
        body = b"method not allowed\n"
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        """No line per request: probes and scrapes come every few seconds."""
