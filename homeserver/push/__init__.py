"""Push: the rule model, the spec's default rules, the pure evaluator and the services
that turn every new event into per-user push actions and unread counts."""
