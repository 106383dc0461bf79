"""The reverse proxy (API gateway): see :mod:`rigfast.proxy.gateway`."""
