"""The playground: one page at `/` for trying the function in a browser (chat, tools, embeddings, models).

Plain HTML, CSS and ES modules from `handler/api/web/`, served by the app itself: no CDN, no build step.
The page and its files are public (they hold no data); everything the page shows comes from the API,
with the key the user types in when `API_KEY` is set. The Content-Security-Policy allows only this
origin, and no inline script or style, so the page cannot be made to load or send anything elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, Router, get
from litestar.static_files import create_static_files_router

WEB_DIR = Path(__file__).parent / "web"
PUBLIC = {"public": True}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # a redeployed function serves its new page at once
}


def _with_security_headers(response: Response[object]) -> Response[object]:
    response.headers.update(SECURITY_HEADERS)
    return response


@get("/", include_in_schema=False, opt=PUBLIC, media_type="text/html")
async def playground_page() -> Response[bytes]:
    return Response((WEB_DIR / "index.html").read_bytes(), media_type="text/html")


def playground_routes() -> list[Router]:
    """The page and its files (`/playground/…`), with the security headers on every response."""
    files = create_static_files_router(path="/playground", directories=[WEB_DIR], opt=PUBLIC,
                                       name="playground", include_in_schema=False)
    return [Router(path="/", route_handlers=[playground_page, files], after_request=_with_security_headers)]
