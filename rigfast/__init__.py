"""rigfast: a RIG-compatible realtime event gateway."""

from rigfast import _ext  # noqa: F401 - first: it decides which engine the request path's modules are imported with
