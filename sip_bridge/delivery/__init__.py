"""Where a call's results go: events, SIP INFO, signed webhooks and their spool."""
