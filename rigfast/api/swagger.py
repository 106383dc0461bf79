"""Swagger UI for the internal API's OpenAPI document, at ``/swagger-ui`` (as RIG has it).

The static files come from the ``swagger-ui-bundle`` package (swagger-ui's own dist files, shipped
on PyPI); nothing is loaded from elsewhere. Without the package, ``/swagger-ui`` answers 404 with
a message saying so.
"""

from __future__ import annotations

import os

from rigfast.errors import NotFound

TYPES = {".js": b"application/javascript; charset=utf-8", ".css": b"text/css; charset=utf-8",
         ".png": b"image/png", ".html": b"text/html; charset=utf-8", ".map": b"application/json"}

PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rigfast internal API</title>
<link rel="stylesheet" href="/swagger-ui/swagger-ui.css"><link rel="icon" href="/swagger-ui/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/swagger-ui/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"});
</script></body></html>
"""


class SwaggerUi:
    def __init__(self) -> None:
        try:
            from swagger_ui_bundle import swagger_ui_path
        except ImportError:
            swagger_ui_path = None
        self.dir = swagger_ui_path
        # the files the package ships, named up front: no path from a request reaches the filesystem
        self.files = {f for f in os.listdir(swagger_ui_path) if os.path.splitext(f)[1] in TYPES} if swagger_ui_path else set()
        self._cache: dict[str, bytes] = {}

    def __call__(self, proto, req, rest: str) -> None:
        if self.dir is None:
            raise NotFound("Swagger UI needs the swagger-ui-bundle package (pip install swagger-ui-bundle)")
        if rest in ("", "/", "/index.html"):
            proto.respond(req, 200, PAGE, TYPES[".html"])
            return
        name = rest.lstrip("/")
        if name not in self.files or name == "index.html":
            raise NotFound(f"no Swagger UI file {name!r}")
        body = self._cache.get(name)
        if body is None:
            with open(os.path.join(self.dir, name), "rb") as fh:
                body = self._cache[name] = fh.read()
        proto.respond(req, 200, body, TYPES[os.path.splitext(name)[1]], [(b"cache-control", b"max-age=86400")])
