"""The web chat page: static files at ``/``, beside the HTTP API (and ``/ws``).

The page is plain HTML, CSS and JavaScript shipped in ``goim/resources/static``
(package data); it talks to the HTTP API and to a goim WebSocket, and needs no
build step and no server-side rendering. :func:`web_site_root` puts it in front
of the Klein API resource: ``/`` is the page, ``/static/...`` its files,
``/web-config.json`` tells the page where its WebSocket is, ``/ws`` (when given)
is the WebSocket itself, and every other path goes to the API unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.web import static
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Request

#: where the page's files live (shipped as package data)
STATIC_DIR = Path(__file__).resolve().parent / "static"

#: headers on every page file: no sniffing, no framing by other sites, and a
#: content security policy. protobufjs generates its codecs with ``Function``,
#: hence 'unsafe-eval'.
SECURITY_HEADERS = {
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"Content-Security-Policy": (
        b"default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self'; "
        b"img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; "
        b"base-uri 'none'; form-action 'none'"
    ),
    b"Cache-Control": b"no-cache",
}


def _secure(request: Request) -> None:
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)


class StaticFiles(static.File):
    """The page's files: no directory listings, the security headers, exact types."""

    contentTypes = {
        **static.File.contentTypes,
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".proto": "text/plain; charset=utf-8",
        ".svg": "image/svg+xml",
        ".txt": "text/plain; charset=utf-8",
        ".LICENSE": "text/plain; charset=utf-8",
    }

    indexNames: list[str] = []

    def directoryListing(self) -> Any:
        return notFound()

    def render_GET(self, request: Request) -> Any:
        _secure(request)
        return super().render_GET(request)

    def createSimilarFile(self, path: str) -> static.File:
        f = super().createSimilarFile(path)
        f.contentTypes = self.contentTypes
        return f


class JSONResource(Resource):
    """A fixed JSON document."""

    isLeaf = True

    def __init__(self, document: dict[str, Any]) -> None:
        super().__init__()
        self._body = json.dumps(document).encode()

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-cache")
        return self._body


class WebRoot(Resource):
    """The root of an HTTP site that serves the page, the API and maybe ``/ws``.

    Args:
        api: the API's resource (a Klein app's ``resource()``); it sees every path
            that is not the page's, unchanged.
        ws: the WebSocket resource for ``/ws``, if this process holds clients.
        ws_url: where the page opens its WebSocket (absolute ``ws://``/``wss://``
            URL, or a path on the page's own origin such as ``/ws``).
    """

    def __init__(self, api: Any, *, ws: Any = None, ws_url: str = "/ws") -> None:
        super().__init__()
        self._api = api
        self._files = StaticFiles(str(STATIC_DIR))
        self._index = StaticFiles(str(STATIC_DIR / "index.html"), defaultType="text/html; charset=utf-8")
        self._config = JSONResource({"ws_url": ws_url})
        self._ws = ws

    def getChildWithDefault(self, path: bytes, request: Request) -> Any:
        if path == b"" and not request.postpath:
            return self._index
        if path == b"static":
            return self._files
        if path == b"web-config.json" and not request.postpath:
            return self._config
        if path == b"ws" and self._ws is not None and not request.postpath:
            return self._ws
        # hand the whole path to the API: put the segment back
        assert request.prepath is not None and request.postpath is not None
        request.postpath.insert(0, request.prepath.pop())
        return self._api
