"""Sans-IO audio pieces: PCM frames, silence gating, VAD and endpointing, the wire format."""
