"""The media processes: PJSUA2 calls, their dialogs and journal, the one thread boundary."""
