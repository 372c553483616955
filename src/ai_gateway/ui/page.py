"""UsagePage: the page's files (`/ui`, `/ui/app.js`, ...) served from the package, read once
when the gateway is built. The shell holds no data: the script asks for an admin key and
reads the admin API with it. Only the files listed here are served, by exact path, so no
request can reach another file."""

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Final

from starlette.responses import Response

from ai_gateway.api.routes import Access, Call, Endpoint

PAGE_PATH: Final = "/ui"
ASSETS: Final = {
    PAGE_PATH: ("index.html", "text/html; charset=utf-8"),
    f"{PAGE_PATH}/app.js": ("app.js", "text/javascript; charset=utf-8"),
    f"{PAGE_PATH}/chart.js": ("chart.js", "text/javascript; charset=utf-8"),
    f"{PAGE_PATH}/style.css": ("style.css", "text/css; charset=utf-8"),
}
"""Path -> (file in this package, content type)."""
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    # Revalidated on every load (a 304 when unchanged), so an upgraded gateway's page is
    # never mixed with an older script.
    "cache-control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the page: its bytes, content type and entity tag."""

    body: bytes
    content_type: str
    etag: str

    @classmethod
    def read(cls, name: str, content_type: str) -> "Asset":
        """The packaged file `name`."""
        body = resources.files(__package__ or "ai_gateway.ui").joinpath(name).read_bytes()
        return cls(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')

    async def serve(self, call: Call) -> Response:
        """The file, or a 304 when the browser's copy is current."""
        headers = {**SECURITY_HEADERS, "etag": self.etag}
        if call.request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.body, headers=headers, media_type=self.content_type)


def page_routes() -> dict[str, dict[str, Endpoint]]:
    """The page's paths for the route table: public, since the files hold no data."""
    routes: dict[str, dict[str, Endpoint]] = {}
    for path, (name, content_type) in ASSETS.items():
        asset = Asset.read(name, content_type)
        routes[path] = {"GET": Endpoint(asset.serve, access=Access.PUBLIC)}
    return routes
