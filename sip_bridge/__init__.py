"""The SIP side: the Kamailio front, the PJSUA2 media processes, delivery of results, the CLI."""
