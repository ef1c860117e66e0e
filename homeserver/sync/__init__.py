"""Stream positions, the notifier that wakes long-polls, and the /sync builder."""
