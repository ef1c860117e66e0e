"""Profiles and the user directory: who a user says they are, and who can find them."""
