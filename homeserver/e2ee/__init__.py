"""End-to-end encryption plumbing: device and cross-signing keys, one-time keys,
device-list changes, to-device messages and server-side room key backup.

The server never sees plaintext keys; it stores what clients upload, checks the
signatures it can, and hands keys out (claims) and changes (sync) to other devices.
"""
