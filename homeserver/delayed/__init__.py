"""Delayed events (MSC4140): events users schedule now for the server to send later."""
