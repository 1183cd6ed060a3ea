"""Small torch helpers shared by worker-side steps and sessions (imported only where they run)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DTYPES = ("float32", "float16", "bfloat16")


def torch_dtype(name: str) -> Any:
    """The torch dtype a program of ``name`` is exported in: int8 specializations export float32 programs (the
    compile backend quantizes their linear layers)."""
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
            "int8": torch.float32}[name]


def torch_device(device: str) -> str:
    """An explicit device index: exported programs record ``cuda:0`` for tensors made on ``cuda``."""
    return "cuda:0" if device == "cuda" else device


def example_inputs(shapes: dict[str, list[int]], dtypes: dict[str, str], device: str = "cpu") -> dict[str, Any]:
    """Deterministic example tensors of the given shapes (ids are small, masks are ones)."""
    import torch

    out: dict[str, Any] = {}
    for name in list(dtypes) + [n for n in shapes if n not in dtypes]:  # the graph's input order
        shape = shapes[name]
        dt = getattr(torch, dtypes.get(name, "int64"))
        if dt.is_floating_point:
            gen = torch.Generator().manual_seed(0)
            out[name] = torch.randn(*shape, generator=gen).to(dt)
        elif "mask" in name:
            out[name] = torch.ones(*shape, dtype=dt)
        else:
            out[name] = (torch.arange(int(torch.tensor(shape).prod())) % 100 + 1).reshape(shape).to(dt)
        out[name] = out[name].to(device)
    return out


def strict_fp32() -> None:
    """Full float32 matmuls and convolutions (no TF32) where outputs are compared or compiled: TF32 alone
    moved GPU outputs by up to 0.55 from the CPU reference (cuDNN allows it for convolutions by default,
    and Whisper's encoder starts with two)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def share_precompiled_headers() -> None:
    """Keep Inductor's precompiled C++ headers in its shared cache folder, where the next compile finds them.

    torch puts them under ``tempfile.gettempdir()`` (fixed when ``torch._inductor.codecache`` is imported), not
    under ``TORCHINDUCTOR_CACHE_DIR``, and a step's ``TMPDIR`` is its own scratch folder (``runner.step_temp``), so
    every CPU compile rebuilt both of its headers (~150 MB each) and threw them away: 13 of an AOTInductor
    compile's 26 s on 2 idle cores (the real MiniLM at seq 16). The headers are keyed by the preprocessed header,
    the compiler and its flags, and built under a file lock, so sharing them changes no compiled byte."""
    import os

    from torch._inductor import codecache

    if not hasattr(codecache, "_HEADER_DIR"):  # another torch: it keeps its headers where it decides
        return
    root = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or codecache.default_cache_dir()
    codecache._HEADER_DIR = os.path.join(root, "precompiled_headers")
    codecache._HEADER_LOCK_DIR = os.path.join(codecache._HEADER_DIR, "locks")


def quiet_warnings() -> None:
    """Silence the export toolchain's chatter; real problems still raise."""
    import logging
    import os
    import sys
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("torch.onnx", "torch._dynamo", "torch._inductor", "torch.export", "onnxscript", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Read by transformers when it is imported; set directly when it already is.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


# Ops that only check a tensor's metadata (or, for detach_, change nothing an inference graph reads): when such a node
# is the only reader of its input, that value is otherwise dead, and so is the check. (Not the guards on shapes:
# `_assert_scalar` reads symbols of the inputs; our programs have static shapes, and such guards stay.)
_CHECKS = ("aten::_assert_tensor_metadata", "aten::detach_")


def save_program(program: Any, path: Path) -> int:
    """Save a torch.export program holding only what its graph reads; returns the bytes of weights dropped.

    An exported graph (a Whisper encoder side, one decoder step) is traced from a module holding the whole
    model, and torch.export keeps every parameter, buffer and constant of it, read or not, along with the dead
    nodes that read them (dropout, kept as random; metadata checks). At whisper-large-v3's dims the encoder side
    carried the decoder's 3.2 GB: on disk, in every session's memory, and in the AOTInductor package, which
    embeds every constant it is given. torch.export also saves the example inputs the graph was traced with:
    a decoder step's random cross-attention states, 0.5 GB at large-v3's dims and batch 1; nothing reads them
    (the compile steps make their own examples from the io's shapes), so they are not saved. The step's log
    says how much was dropped."""
    import torch

    dropped = prune_program(program)
    program.example_inputs = None
    torch.export.save(program, path)
    print(f"dropped {dropped / 1e6:.1f} MB of weights the graph never reads")
    return dropped


def prune_program(program: Any) -> int:
    """Remove the dead nodes and the weights no live node reads (in place); returns the bytes dropped."""
    from torch.export.graph_signature import InputKind

    graph = program.graph
    while True:  # a dead value's check makes it look read: drop the check, then what only it read, again
        graph.eliminate_dead_code(is_impure_node=lambda n: n.is_impure(impure_random=False))
        lone_checks = [n for n in graph.nodes if n.op == "call_function" and op_name(n) in _CHECKS
                       and not n.users and all(len(i.users) == 1 for i in n.all_input_nodes)]
        if not lone_checks:
            break
        for node in lone_checks:
            graph.erase_node(node)
    placeholders = {n.name: n for n in graph.nodes if n.op == "placeholder"}
    weights = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)
    kept = []
    for spec in program.graph_signature.input_specs:
        node = placeholders[spec.arg.name]
        if spec.kind in weights and not node.users:
            graph.erase_node(node)
        else:
            kept.append(spec)
    program.graph_signature.input_specs[:] = kept
    targets = {spec.target for spec in kept if spec.target is not None}
    removed: dict[int, int] = {}  # storage → bytes, of the entries no kept input names
    for table in (program.state_dict, program.constants):
        for name in [k for k in table if k not in targets]:
            value = table.pop(name)
            if hasattr(value, "untyped_storage"):
                removed[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
    for table in (program.state_dict, program.constants):  # a tied alias of a kept weight frees nothing
        for value in table.values():
            if hasattr(value, "untyped_storage"):
                removed.pop(value.untyped_storage().data_ptr(), None)
    program.graph_module.recompile()
    return sum(removed.values())


def op_name(node: Any) -> str:
    """An fx node's operator by schema name (``aten::linear``), or "" for a node that calls none."""
    name = getattr(node.target, "name", None)
    return str(name()) if callable(name) else ""


def load_program(path: Path) -> Any:
    """A saved torch.export program, loaded without ever unpickling.

    ``torch.export.load`` unpickles in three places — pickled weights and constants
    (``torch.load(weights_only=False)``), opaque objects (``pickle.loads``) and, for archives of
    the older format, a fallback to ``weights_only=False`` — so a crafted file runs code. Our
    programs hold plain tensors, so here every ``torch.load`` is weights-only and the object
    loaders refuse: such a file is an error, never code that runs.
    """
    import torch

    from ..errors import ModelLoadError

    with _no_unpickling(), _cached_type_hints():
        try:
            program = torch.export.load(path)
        except Exception as e:
            raise ModelLoadError(f"{path} cannot be loaded as a torch.export program without unpickling "
                                 f"({type(e).__name__}: {str(e)[:300]}); rebuild it with this qeffbuild and torch, "
                                 "and never load programs from untrusted places") from e
    return program


@contextmanager
def _cached_type_hints() -> Iterator[None]:
    """``typing.get_type_hints`` memoized per class while a program loads.

    torch's deserializer asks it again for every node of the graph (tens of thousands of calls, ~1 s
    of a Whisper-tiny transcriber's start-up); a class's hints do not change while it loads."""
    import typing

    original = typing.get_type_hints
    memo: dict[tuple[Any, int], Any] = {}

    def cached(obj: Any, globalns: Any = None, localns: Any = None, include_extras: bool = False) -> Any:
        if not isinstance(obj, type) or localns is not None or include_extras:
            return original(obj, globalns, localns, include_extras)
        key = (obj, id(globalns))
        if key not in memo:
            memo[key] = original(obj, globalns)
        return memo[key]

    typing.get_type_hints = cached
    try:
        yield
    finally:
        typing.get_type_hints = original


@contextmanager
def _no_unpickling() -> Iterator[None]:
    import pickle

    import torch
    from torch.export.pt2_archive import _package

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise pickle.UnpicklingError("qeffbuild loads no pickled objects from artifacts")

    real_load, real_obj = torch.load, torch._C._pickle_load_obj
    real_pickle = getattr(_package, "pickle", None)  # the archive module imports pickle from torch 2.12 on

    def weights_only(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    torch.load = weights_only
    torch._C._pickle_load_obj = refuse
    if real_pickle is not None:
        _package.pickle = type("NoPickle", (), {"loads": staticmethod(refuse), "load": staticmethod(refuse)})  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.load, torch._C._pickle_load_obj = real_load, real_obj
        if real_pickle is not None:
            _package.pickle = real_pickle
