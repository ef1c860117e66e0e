"""Accounts: registration, login, passwords, user-interactive auth, tokens and devices.

The services here hold the logic; homeserver/client/{register,login,account,devices,admin}.py
are thin HTTP handlers over them. AppKeys for the services live in `keys.py`.
"""
