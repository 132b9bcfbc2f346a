"""What the benchmarks share, in the order of the data path they measure.

- ``frames``: the audio's shape (8 kHz int16, 20 ms frames; 16 kHz for the model).
- ``prompt_calls``: the speech corpus cut into calls of recorded prompts, each with its gate.
- ``media_generator``: the media side: calls played to workers over ZeroMQ at real-time pace.
- ``gated_call``: one call through the configured gate as wire messages, for an in-process
  ``Worker``; the worker settings ``sip-bridge worker`` builds.
- ``workers``: real inference workers as child processes, and a pool of them with a generator.
- ``live_level``: one load level played and read: latencies, lost finals, partials, CPU, WER.
- ``offline_model``: the speech model alone on all the audio at once, in one or more processes.
- ``shm_ring``, ``transport_ends``: the audio transports the transport bench compares.
- ``sipp_trace``, ``consumers``, ``alignment``, ``caption_lag``: the whole-product benches' view
  of what a caller and a consumer saw (sipp's trace, webhook and event stream, word timings,
  word lag).
- ``cpu_time``, ``figures``, ``capacity``, ``command_line``: CPU counters, percentiles and table
  cells, which levels hold, and the shared options and run header.
- ``cpu_probe/``: a ``sitecustomize`` that times ONNX Runtime inside a worker.

A bench file keeps its own scenario, options and tables; nothing here prints a figure.
"""
