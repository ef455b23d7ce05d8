"""The only code that does HTTP to Mailtrap: session, transport, Email Logs, suppressions."""
