"""The one frozen configuration: its sections, defaults, loading and checks."""
