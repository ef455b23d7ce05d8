"""Validate, plan and enqueue; steering, dead letters, campaign files."""
