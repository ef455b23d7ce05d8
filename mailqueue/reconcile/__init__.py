"""Unknown outcomes: call tags, Email Logs matching, look-ups."""
