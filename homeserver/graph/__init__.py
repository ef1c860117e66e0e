"""Pure event-graph algorithms: authorisation rules, state resolution, auth chains.

No I/O here: callers pass events in (or async fetch callbacks); see ARCHITECTURE.md.
Import the submodules directly (e.g. `from homeserver.graph.auth_rules import ...`).
"""
