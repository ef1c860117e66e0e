"""Inbound server-server HTTP: the /_matrix/federation and /_matrix/key sub-apps.

Each module exposes `setup(mounts)`; homeserver/app.py lists which ones run.
"""
