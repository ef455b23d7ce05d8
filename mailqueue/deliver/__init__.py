"""The drain and its stages: claims, posting, outcomes, settling, hooks."""
