"""Closed-loop evaluation: CALVIN's protocol (calvin_rollout), CALVIN access (calvin_backend,
calvin_service), and offline metrics on a validation split (offline)."""
