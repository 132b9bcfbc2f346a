"""From a call to the workers: the audio sender thread and the choice of worker."""
