"""The guarded HTTP server the webhook app and the dashboard run on."""
