"""The federation adapter: server keys, request signing, discovery, the server-server API.

It wraps the core (`homeserver`), which never imports this package except in the
composition root (homeserver/app.py) and the CLI (homeserver/__main__.py).
"""
