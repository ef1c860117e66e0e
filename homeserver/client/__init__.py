"""The client-server API (/_matrix/client): one module per spec area, thin handlers.

Each module exposes `setup(mounts)` adding its routes to `mounts.client`; handlers parse
the request (homeserver.http helpers), make one service call and answer. The list of
active modules lives in homeserver/app.py.
"""
