"""Per-user and ephemeral streams: typing, receipts, presence and account data.

Each service owns one sync stream: it allocates positions, persists (except typing,
which lives in memory), notifies the sync notifier, and hands updates for local users to
the `edus.EduOutbox`, which passes them to federation.
"""
