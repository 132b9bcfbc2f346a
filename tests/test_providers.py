"""Execution provider choice and options. No GPU here or in CI: the CUDA choice is tested by
faking the probe's answer, so what a CUDA session would be given is checked without one."""

from __future__ import annotations

import pytest

from inference import providers
from inference.providers import (
    CPU,
    CUDA,
    ProviderChoice,
    ProviderUnavailableError,
    choose_providers,
    cuda_options,
    cuda_runs,
    session_options,
)

ARENA_OPTIONS = {
    "device_id": "0",
    "arena_extend_strategy": "kSameAsRequested",
    "cudnn_conv_algo_search": "HEURISTIC",
    "do_copy_in_default_stream": "1",
}


def _cuda_probe_says(monkeypatch: pytest.MonkeyPatch, works: bool) -> list[int]:
    probed: list[int] = []

    def fake(device_id: int = 0) -> tuple[bool, str]:
        probed.append(device_id)
        return (True, "ok") if works else (False, "no GPU in this test")

    monkeypatch.setattr(providers, "cuda_runs", fake)
    return probed


def test_cuda_options_keep_the_arena_from_fragmenting() -> None:
    assert cuda_options() == ARENA_OPTIONS
    assert cuda_options(device_id=1, gpu_mem_limit_bytes=2 << 30) == {
        **ARENA_OPTIONS,
        "device_id": "1",
        "gpu_mem_limit": str(2 << 30),
    }


def test_no_memory_limit_unless_one_is_given() -> None:
    assert "gpu_mem_limit" not in cuda_options(gpu_mem_limit_bytes=None)
    assert "gpu_mem_limit" not in cuda_options(gpu_mem_limit_bytes=0)


def test_bad_limits_and_devices_are_rejected() -> None:
    with pytest.raises(ValueError, match="gpu_mem_limit_bytes"):
        cuda_options(gpu_mem_limit_bytes=-1)
    with pytest.raises(ValueError, match="device_id"):
        cuda_options(device_id=-1)
    with pytest.raises(ValueError, match="auto, cuda or cpu"):
        choose_providers("gpu")


def test_cuda_choice_carries_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    probed = _cuda_probe_says(monkeypatch, works=True)
    choice = choose_providers("cuda", device_id=1, gpu_mem_limit_bytes=3 << 30)
    assert probed == [1]
    assert choice.is_cuda and choice.name == CUDA
    assert (choice.device_type, choice.device_id) == ("cuda", 1)
    expected = {**ARENA_OPTIONS, "device_id": "1", "gpu_mem_limit": str(3 << 30)}
    assert dict(choice.options) == expected
    # CUDA first with its options, the CPU behind it for ops without a CUDA kernel
    assert choice.session_providers() == [(CUDA, expected), CPU]
    assert choose_providers("auto").session_providers() == [(CUDA, ARENA_OPTIONS), CPU]


def test_auto_falls_back_and_cuda_refuses_to(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda_probe_says(monkeypatch, works=False)
    fallback = choose_providers("auto", device_id=1, gpu_mem_limit_bytes=1 << 30)
    assert fallback == ProviderChoice(CPU)
    assert (fallback.device_type, fallback.device_id) == ("cpu", 0)
    assert fallback.session_providers() == [CPU]
    with pytest.raises(ProviderUnavailableError, match="no GPU in this test"):
        choose_providers("cuda")


def test_cpu_setting_never_probes_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    probed = _cuda_probe_says(monkeypatch, works=True)
    choice = choose_providers("cpu")
    assert probed == []
    assert not choice.is_cuda and choice.options == ()
    assert choice.session_providers() == [CPU]


def test_choice_is_a_frozen_value() -> None:
    choice = ProviderChoice(CUDA, 0, tuple(sorted(ARENA_OPTIONS.items())))
    assert choice == ProviderChoice(CUDA, 0, tuple(sorted(ARENA_OPTIONS.items())))
    assert hash(choice) == hash(ProviderChoice(CUDA, 0, tuple(sorted(ARENA_OPTIONS.items()))))
    with pytest.raises(AttributeError):
        choice.name = CPU  # type: ignore[misc]


def test_real_probe_on_this_machine() -> None:
    works, why_not = cuda_runs()
    if works:
        assert choose_providers("cuda").is_cuda
        assert choose_providers("auto").is_cuda
    else:
        assert why_not
        assert choose_providers("auto").name == CPU
        with pytest.raises(ProviderUnavailableError, match="CUDA"):
            choose_providers("cuda")


def test_session_options() -> None:
    options = session_options(2)
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    with pytest.raises(ValueError, match="threads"):
        session_options(0)
