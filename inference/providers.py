"""ONNX Runtime execution providers and session options, chosen deliberately.

``onnxruntime-gpu`` lists ``CUDAExecutionProvider`` as available even where the CUDA and cuDNN
libraries are missing; a session asking for it then prints a long error and silently runs on the
CPU. So "auto" checks that the provider library loads and that a tiny probe session really runs on
CUDA, with onnxruntime's logging turned down while it tries, and says which provider it picked.

This module owns that choice and the ``SessionOptions`` the bridge uses. It never loads a real model
and never decides batch sizes or thread counts (callers pass them in).
"""

from __future__ import annotations

import ctypes
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import onnx
import onnx.helper
import onnxruntime as ort

log = logging.getLogger(__name__)

ProviderSetting = Literal["auto", "cuda", "cpu"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# onnxruntime's own default logger severity (warning); restored after the quiet CUDA probe.
_ORT_DEFAULT_LOG_SEVERITY = 2
_ORT_LOG_FATAL_ONLY = 4

_logged_choices: set[tuple[str, int]] = set()


class ProviderUnavailableError(RuntimeError):
    """The configuration asked for an execution provider this machine cannot run."""


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    """The provider that will run the sessions, with its options, ready for ``InferenceSession``."""

    name: str
    device_id: int = 0
    options: tuple[tuple[str, str], ...] = field(default=())

    @property
    def is_cuda(self) -> bool:
        return self.name == CUDA

    @property
    def device_type(self) -> Literal["cuda", "cpu"]:
        """Where this provider keeps tensors, as ``OrtValue`` and ``IOBinding`` name devices."""
        return "cuda" if self.is_cuda else "cpu"

    def session_providers(self) -> list[str | tuple[str, dict[str, str]]]:
        """The ``providers=`` argument. CUDA keeps the CPU provider behind it for the few ops that
        have no CUDA kernel; onnxruntime places those itself."""
        if self.is_cuda:
            return [(CUDA, dict(self.options)), CPU]
        return [CPU]


def cuda_options(device_id: int = 0, gpu_mem_limit_bytes: int | None = None) -> dict[str, str]:
    """CUDA provider options that keep the memory arena from fragmenting.

    ``gpu_mem_limit_bytes`` caps this session's arena, so several worker processes can share one
    GPU without starving each other; None or 0 means no limit (onnxruntime's default).
    """
    if device_id < 0:
        raise ValueError(f"device_id must be >= 0, got {device_id}")
    options = {
        "device_id": str(device_id),
        # Batches of varying shape make the default power-of-two growth (kNextPowerOfTwo) reserve
        # up to twice what they use, in chunks that later requests of other sizes cannot fill;
        # kSameAsRequested grows by what is asked, and the model's warm-up grows it at start-up.
        "arena_extend_strategy": "kSameAsRequested",
        # EXHAUSTIVE (onnxruntime's default) times every cuDNN algorithm, with a workspace for
        # each, on every new input shape; each new batch size and clip length is one, so a live
        # call would pay for the search and the arena would grow mid-call. DEFAULT avoids that
        # too but always takes implicit GEMM, whatever the shape; HEURISTIC asks cuDNN's own
        # heuristics, which cost nothing at run time and pick a shape-appropriate algorithm.
        "cudnn_conv_algo_search": "HEURISTIC",
        # Host-device copies on the compute stream, ordered with the kernels (onnxruntime's
        # recommended setting: separate copy streams can race with the kernels that use them).
        "do_copy_in_default_stream": "1",
    }
    if gpu_mem_limit_bytes is not None:
        if gpu_mem_limit_bytes < 0:
            raise ValueError(f"gpu_mem_limit_bytes must be >= 0, got {gpu_mem_limit_bytes}")
        if gpu_mem_limit_bytes > 0:
            options["gpu_mem_limit"] = str(gpu_mem_limit_bytes)
    return options


def choose_providers(
    setting: str = "auto", device_id: int = 0, gpu_mem_limit_bytes: int | None = None
) -> ProviderChoice:
    """Pick the execution provider for ``setting`` ("auto", "cuda" or "cpu").

    "auto" takes CUDA only when a session really runs on it, else the CPU; "cuda" raises
    ``ProviderUnavailableError`` instead of falling back; "cpu" never touches CUDA. ``device_id``
    and ``gpu_mem_limit_bytes`` (None or 0: no limit) apply only where CUDA is chosen.
    """
    if setting not in ("auto", "cuda", "cpu"):
        raise ValueError(f"execution provider setting must be auto, cuda or cpu, not {setting!r}")
    options = cuda_options(device_id, gpu_mem_limit_bytes)
    reason = "configured"
    if setting == "cpu":
        choice = ProviderChoice(CPU)
    else:
        works, why_not = cuda_runs(device_id)
        if works:
            choice = ProviderChoice(CUDA, device_id, tuple(sorted(options.items())))
        elif setting == "cuda":
            raise ProviderUnavailableError(f"CUDA was configured but cannot run: {why_not}")
        else:
            choice = ProviderChoice(CPU)
            reason = f"CUDA unavailable: {why_not}"
    _log_choice_once(choice, setting, reason)
    return choice


@functools.cache
def cuda_runs(device_id: int = 0) -> tuple[bool, str]:
    """Whether a session on ``device_id`` really runs on CUDA, and if not, why. Probed once."""
    if CUDA not in ort.get_available_providers():
        return False, "this onnxruntime build has no CUDA provider"
    library = _cuda_provider_library()
    if library is None:
        return False, "the CUDA provider library is not in the onnxruntime package"
    try:
        # Loading it ourselves fails quietly where its CUDA/cuDNN dependencies are missing,
        # instead of the multi-line error onnxruntime prints for the same failure.
        ctypes.CDLL(str(library))
    except OSError as exc:
        return False, f"cannot load {library.name} ({exc})"
    options = ort.SessionOptions()
    options.log_severity_level = 3
    ort.set_default_logger_severity(_ORT_LOG_FATAL_ONLY)
    try:
        session = ort.InferenceSession(
            _probe_model(),
            options,
            providers=[(CUDA, cuda_options(device_id)), CPU],
        )
        running: list[str] = session.get_providers()
    except Exception as exc:  # onnxruntime raises untyped pybind errors
        return False, f"probe session failed ({exc})"
    finally:
        ort.set_default_logger_severity(_ORT_DEFAULT_LOG_SEVERITY)
    if not running or running[0] != CUDA:
        return False, f"a probe session fell back to {running}"
    return True, "ok"


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Options for the bridge's sessions: ``threads`` intra-op threads, one inter-op thread.

    Several single-thread sessions (one per worker process) beat one multi-thread session on the
    model's many small ops, and idle pool threads must not spin: that burns the CPU the other
    workers need.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _cuda_provider_library() -> Path | None:
    capi = Path(ort.__file__).parent / "capi"
    for name in ("libonnxruntime_providers_cuda.so", "onnxruntime_providers_cuda.dll"):
        if (capi / name).is_file():
            return capi / name
    return None


def _probe_model() -> bytes:
    value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])
    result = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "x"], ["y"])], "cuda_probe", [value], [result]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime the bridge supports
    serialized: Any = model.SerializeToString()
    return bytes(serialized)


def _log_choice_once(choice: ProviderChoice, setting: str, reason: str) -> None:
    key = (choice.name, choice.device_id)
    if key in _logged_choices:
        return
    _logged_choices.add(key)
    if choice.is_cuda:
        log.info(
            "ONNX Runtime runs on %s device %d (setting %s; options %s)",
            choice.name,
            choice.device_id,
            setting,
            dict(choice.options),
        )
    else:
        log.info("ONNX Runtime runs on %s (setting %s; %s)", choice.name, setting, reason)
