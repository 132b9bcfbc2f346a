"""ONNX Runtime inference workers: VAD-cut utterances of many calls, batched, transcribed."""
