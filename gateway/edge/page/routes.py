"""The page's HTTP routes, for gateway/runtime/http.py: ``/``, ``/devices/NAME``, static files.

A thin shell: each request takes a `PageState` snapshot from the daemon (``snapshot()``),
builds the view, renders it, and scrubs the text of every registered secret (the last line
of defence: the views never read one). ``?cells=1`` answers the refreshable cells as JSON
for the page's script. Nothing is computed while nobody asks.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote

from gateway.core.secrets import scrub
from gateway.runtime.http import Request, Response, Route

from .render import Rendered, render_device, render_main, static_file
from .view import PageState, device_view, main_view

HTML = "text/html; charset=utf-8"
JSON = "application/json"
_SECURITY = (
    ("Content-Security-Policy",
     "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; "
     "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
_NO_STORE = (("Cache-Control", "no-store"), *_SECURITY)
_STATIC = {
    "/static/page.css": ("page.css", "text/css; charset=utf-8"),
    "/static/page.js": ("page.js", "text/javascript; charset=utf-8"),
}


def _answer(request: Request, rendered: Rendered) -> Response:
    if request.param("cells") is not None:
        return Response(200, scrub(rendered.cells_json().decode("utf-8")).encode("utf-8"),
                        JSON, _NO_STORE)
    return Response(200, scrub(rendered.html).encode("utf-8"), HTML, _NO_STORE)


def page_routes(snapshot: Callable[[], PageState], version: str) -> dict[str, Route]:
    """The routes of the page; the caller puts them behind the token gate."""

    async def main(request: Request) -> Response:
        return _answer(request, render_main(main_view(snapshot()), version))

    async def device(request: Request) -> Response:
        name = unquote(request.path.removeprefix("/devices/"))
        view = device_view(snapshot(), name)
        if view is None:
            return Response(404, b"no such device\n", headers=_NO_STORE)
        return _answer(request, render_device(view, version))

    routes: dict[str, Route] = {"/": main, "/devices/*": device}
    for path, (name, content_type) in _STATIC.items():
        body = static_file(name)

        async def serve(request: Request, body: bytes = body,
                        content_type: str = content_type) -> Response:
            return Response(200, body, content_type,
                            (("Cache-Control", "max-age=3600"), *_SECURITY))

        routes[path] = serve
    return routes
