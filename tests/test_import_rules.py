"""The layout's rules, read from the code (every import statement, wherever it stands: module
level, inside functions, under ``TYPE_CHECKING``), so that the tree keeps telling the
architecture (docs/architecture.md):

- ``media/`` is sans-IO: the standard library's pure parts, numpy and soxr; no ZeroMQ, no
  ONNX Runtime, no PJSUA2, no sockets or threads, and nothing of either side.
- Workers (``inference/``) never import PJSUA2 or the SIP side.
- The SIP side (``sip_bridge/``) talks to workers only through the wire format (``media.wire``):
  it imports nothing of ``inference/`` but in its composition root, the command line and the
  supervisor that run every role on one host.
- PJSUA2 is imported only by the media processes (``sip_bridge/calls/``) and the demo caller.
- No import cycle between modules.

The checker is tested on a made-up graph first, so a rule that could not fail is caught.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("media", "inference", "sip_bridge")

# Standard-library modules that do I/O or run threads: not for the sans-IO media/ folder.
IO_STDLIB = {
    "asyncio", "http", "multiprocessing", "select", "selectors", "signal", "socket",
    "socketserver", "sqlite3", "ssl", "subprocess", "threading", "urllib",
}  # fmt: skip
MEDIA_THIRD_PARTY = {"numpy", "soxr"}
# The composition root: the command line starts every role (worker included) and the
# supervisor prepares the model before it starts the workers.
SIP_SIDE_MAY_IMPORT_INFERENCE = {"sip_bridge.cli", "sip_bridge.serve.supervisor"}
PJSUA2_USERS = ("sip_bridge.calls.", "sip_bridge.serve.demo")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def local_modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """Every module ``name`` imports: local ones resolved to the module (``from pkg import mod``
    names ``pkg.mod``), outside ones by their top-level name."""
    known = set(known)
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.add(alias.name if alias.name in known else alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "__future__":
                continue
            if target.split(".")[0] not in PACKAGES:
                out.add(target.split(".")[0])
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = local_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def forbidden_arrows(graph: Mapping[str, set[str]]) -> list[str]:
    stdlib = set(sys.stdlib_module_names)
    wrong = []
    for src, targets in sorted(graph.items()):
        top = src.split(".")[0]
        for dst in sorted(targets):
            dst_top = dst.split(".")[0]
            why = None
            if top == "media":
                if dst_top in ("inference", "sip_bridge"):
                    why = "media/ belongs to neither side"
                elif dst_top in IO_STDLIB:
                    why = "media/ is sans-IO"
                elif dst_top != "media" and dst_top not in stdlib | MEDIA_THIRD_PARTY:
                    why = "media/ imports only the standard library, numpy and soxr"
            elif top == "inference" and dst_top in ("sip_bridge", "pjsua2"):
                why = "workers never import the SIP side or PJSUA2"
            elif (
                top == "sip_bridge"
                and dst_top == "inference"
                and src not in SIP_SIDE_MAY_IMPORT_INFERENCE
            ):
                why = "the SIP side reaches workers only through media.wire"
            if dst_top == "pjsua2" and not src.startswith(PJSUA2_USERS):
                why = why or "PJSUA2 stays behind the media processes' thread boundary"
            if why:
                wrong.append(f"{src} -> {dst}: {why}")
    return wrong


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path) per strongly connected group of local modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_catches_forbidden_arrows_and_cycles() -> None:
    made_up = {
        "media.wire": {"numpy", "struct"},
        "media.curve": {"zmq"},
        "media.gate": {"threading"},
        "inference.worker": {"media.wire", "sip_bridge.settings.config"},
        "sip_bridge.calls.media_process": {"pjsua2", "inference.worker"},
        "sip_bridge.delivery.events": {"pjsua2"},
        "sip_bridge.cli": {"inference.worker"},
        "sip_bridge.a": {"sip_bridge.b"},
        "sip_bridge.b": {"sip_bridge.c"},
        "sip_bridge.c": {"sip_bridge.a"},
    }
    assert forbidden_arrows(made_up) == [
        "inference.worker -> sip_bridge.settings.config: workers never import the SIP side or"
        " PJSUA2",
        "media.curve -> zmq: media/ imports only the standard library, numpy and soxr",
        "media.gate -> threading: media/ is sans-IO",
        "sip_bridge.calls.media_process -> inference.worker: the SIP side reaches workers only"
        " through media.wire",
        "sip_bridge.delivery.events -> pjsua2: PJSUA2 stays behind the media processes' thread"
        " boundary",
    ]
    assert cycles(made_up) == [["sip_bridge.a", "sip_bridge.b", "sip_bridge.c"]]


def test_the_resolver_reads_every_kind_of_import(tmp_path: Path) -> None:
    source = (
        "from __future__ import annotations\n"
        "import zmq.auth\n"
        "from typing import TYPE_CHECKING\n"
        "from sip_bridge.front import kamailio\n"
        "from sip_bridge.settings.config import Config\n"
        "from . import dialogs\n"
        "if TYPE_CHECKING:\n"
        "    from sip_bridge.serve.supervisor import Supervisor\n"
        "def later() -> None:\n"
        "    import inference.worker\n"
    )
    path = tmp_path / "media_process.py"
    path.write_text(source)
    known = {
        "sip_bridge.front.kamailio", "sip_bridge.settings.config", "sip_bridge.calls.dialogs",
        "sip_bridge.serve.supervisor", "inference.worker",
    }  # fmt: skip
    assert imports_of("sip_bridge.calls.media_process", path, known) == {
        "zmq", "typing", "sip_bridge.front.kamailio", "sip_bridge.settings.config",
        "sip_bridge.calls.dialogs", "sip_bridge.serve.supervisor", "inference.worker",
    }  # fmt: skip


def test_the_tree_keeps_its_rules() -> None:
    graph = import_graph()
    assert {"media.wire", "inference.worker", "sip_bridge.calls.media_process"} <= set(graph)
    assert forbidden_arrows(graph) == []


def test_no_module_imports_itself_round_a_cycle() -> None:
    assert cycles(import_graph()) == []
