"""The Kamailio SIP front: its script, its security and per-source limits, tenant routing."""
