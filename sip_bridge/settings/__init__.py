"""The one frozen configuration: its schema and defaults (config), loading (loading), checks."""
