"""The web page at ``/`` and the operations view at ``/ops``: plain HTML, CSS and JavaScript, no build step."""

from __future__ import annotations

from pathlib import Path

from litestar import Response, get
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from services.api.auth import PUBLIC

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def _page(name: str) -> Response[bytes]:
    # Read per request: the files are small, and an edited page shows without a restart.
    return Response((WEB_DIR / name).read_bytes(), media_type="text/html")


# The pages and their scripts hold no data and need no API key: they ask for one when the API does.


@get("/", operation_id="webPage", include_in_schema=False, opt={PUBLIC: True})
async def index() -> Response[bytes]:
    """The dataset form, live progress and results."""
    return _page("index.html")


@get("/ops", operation_id="opsPage", include_in_schema=False, opt={PUBLIC: True})
async def ops() -> Response[bytes]:
    """The operations view: recent jobs, queues, workers."""
    return _page("ops.html")


web_handlers: list[ControllerRouterHandler] = [
    index,
    ops,
    create_static_files_router(path="/static", directories=[WEB_DIR], name="static", opt={PUBLIC: True}),
]
