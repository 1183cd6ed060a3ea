"""The `inductor` backend: the program compiled by Inductor ahead of time, loaded without a Dynamo trace.

AOTInductor packages for CUDA segfault on load on our GPU machine (torch 2.11, CUDA 13), so CUDA
builds go through Inductor's own precompilation instead (``torch._inductor.standalone_compile``, the
API vLLM starts from). The compile step traces the program to one ATen graph whose first inputs are
the weights (``make_fx`` over ``functional_call``), compiles it for the specialization's fixed shapes,
runs it, and saves the compiled artifact (``precompiled.bin``: the AOTAutograd entry, Inductor's
output code and its Triton kernels) beside the weights (``weights.safetensors``). A session in a
fresh process loads the two and calls the compiled code: no ``torch.export.load``, no Dynamo trace,
no Inductor code generation and no Triton compile (the compile counters say so), and the kernels are
the ones the build ran and the validation checked.

CUDA graphs are not Inductor's (``mode="reduce-overhead"``): its CUDA-graph trees copy every
non-parameter input into their own buffers and check them in Python on each call, which costs more
than a small decoder step. The session says it is ``capturable`` instead, and the decode loop
captures a whole step (decoder, state update, argmax) over its own static buffers as one graph
(``decoding/device.py``); a batch of embeddings is GPU-bound and needs none.

The artifact is valid only for the torch build, the CUDA it was built with and the GPU kind it was
made on, so those enter the step key (``tool_versions``): a build on another GPU kind is another key,
and a session under another torch build refuses the folder with the fix. On CPU the same backend
runs Inductor's C++ code (no CUDA graphs), which is how the tests exercise it on machines without a GPU.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from ..core.environment import cuda_unavailable, gpu_facts
from ..core.plugins import Backend, Runtime
from ..core.steps import StepContext
from ..core.tables import Table
from . import attention, gemv  # torch-free at import: their names and registration only

ARTIFACT = "precompiled.bin"  # torch._inductor.standalone_compile's artifact: the compiled step, kernels included
WEIGHTS = "weights.safetensors"  # the compiled graph's first inputs, in inductor.json's "weights" order
AUTOTUNED = "autotuned.json"  # the launch config each Triton kernel ran at build time (the artifact has none)
TUNING = "tuning.json"  # [specializations.X.inductor] as Inductor config patches
BUILD_CACHE_PREFIX = "qeffbuild-inductor-"  # the compile step's private Inductor cache, under the temp directory


class InductorOptions(Table):
    """[specializations.NAME.inductor]: Inductor's tuning for this specialization (part of the key; the tuned
    kernels are in the saved artifact, so a session needs no tuning of its own)."""

    max_autotune: bool = Field(False, description="Benchmark Triton templates against cuBLAS for every matmul and "
                                                  "keep the fastest (longer compile; the choice is saved).")
    coordinate_descent_tuning: bool = Field(False, description="Tune each generated kernel's launch config by "
                                                               "coordinate descent (as gpt-fast does for decoding).")
    triton_gemv: bool = Field(True, description="On CUDA, compute one-row half-precision products (a batch-1 "
                                                "decoder's projections and LM head) with qeffbuild's Triton GEMV "
                                                "instead of cuBLAS (backends/gemv.py: 2.9 against 5.1 µs at "
                                                "1280×1280 on an H200).")
    # On by default since the H200 bench of large-v3 dims fp16 b1 put it at 1.79 against 1.93 ms/token, exact
    # tokens kept (its first kernel, with a separate pass for the norm's statistics, had been slower: 2.12 ms)
    gemv_fusion: bool = Field(True, description="With triton_gemv: fold the layer norm before each GEMV and the "
                                                "GELU and residual add after it into the GEMV's kernel "
                                                "(qeffbuild::gemv_fused; four fewer kernels a decoder layer).")
    triton_attention: bool = Field(True, description="On CUDA, compute a decoder step's half-precision attention "
                                                     "(one query over the cached keys) with qeffbuild's split-key "
                                                     "Triton kernel instead of cuDNN's SDPA "
                                                     "(backends/attention.py).")
    # All the tensor-core form takes by default: at large-v3 b8 on the H200 it made the step 2.31 ms/token against
    # cuBLAS's 2.72, exact tokens either way (gpu-zoo.toml's whisper-large-v3-zoo-b8-gemv-rows); its first form, on
    # the CUDA cores, had been slower (4.77)
    gemv_max_rows: int = Field(gemv.MAX_ROWS, ge=1, le=gemv.MAX_ROWS,
                               description="With triton_gemv: products of up to this many rows (a decoder step's "
                                           "batch) go to qeffbuild's GEMV, whose several-row form is a tensor-core "
                                           "tile reading each weight once for all of them, with the layer norm, "
                                           "GELU and residual add folded in (backends/gemv_mma.py); larger ones "
                                           "stay with cuBLAS. 1 keeps cuBLAS for every batch above one (large-v3 "
                                           "b8 on an H200: 2.72 against 2.31 ms/token).")
    attention_writes_state: bool = Field(True, description="With triton_attention: the attention kernel also "
                                                           "writes the step's key and value into the "
                                                           "self-attention cache (qeffbuild::decode_attention_"
                                                           "write), in place of Inductor's two state-write "
                                                           "kernels a decoder layer.")

    def compile_options(self) -> dict[str, bool]:
        """Inductor config patches: only those set, so the default build compiles exactly as before."""
        ours = {"triton_gemv", "gemv_fusion", "gemv_max_rows", "triton_attention", "attention_writes_state"}
        return {k: v for k, v in self.model_dump(exclude=ours).items() if v}

    def custom_ops(self, device: str) -> list[str]:
        """The qeffbuild ops the compile may route to on ``device``."""
        if device != "cuda":
            return []
        ops = [attention.OP] if self.triton_attention else []
        if self.triton_attention and self.attention_writes_state:
            ops.append(attention.WRITE_OP)
        if self.triton_gemv:
            ops += [gemv.OP, gemv.FUSED_OP] if self.gemv_fusion else [gemv.OP]
        return ops


class InductorBackend(Backend):
    name = "inductor"
    description = "Inductor, precompiled for the specialization's shapes: loads without a trace or a compile"
    consumes = "program"
    devices = ("cpu", "cuda")
    refused_dtypes: ClassVar[dict[str, str]] = {
        "int8": "int8 here is ONNX Runtime's dynamic quantization; torch's CPU int8 paths (torchao, PT2E) are not "
                "built into Inductor packages by qeffbuild yet: use `ort` for int8",
    }
    toolchain = ("torch", "triton")
    version = 12  # 2: no CUDA-graph trees (mode default); the decode loop captures whole steps. 3: a decoder
    # step writes its retained state in place (InductorSession.step_in_place). 5: precompiled with
    # standalone_compile over (weights, inputs); sessions load it without Dynamo or torch.export.load. 6: one-row
    # half-precision products through qeffbuild::gemv on CUDA; each kernel's launch config recorded and pinned.
    # 7: the record taken as each kernel autotunes, keyed by its Triton source (the v6 record came out empty
    # under torch 2.11, and a reduction kernel benchmarked its 7 configs in every fresh process: 0.9 s of start-up)
    # 8: the layer norm before a GEMV and the GELU and residual add after it folded into it (qeffbuild::gemv_fused)
    # 9: a decoder step's one-query attention through qeffbuild::decode_attention (split keys, one launch)
    # 10: its self-attention writes the step's key and value into the cache (qeffbuild::decode_attention_write)
    # 11: products of 2-16 rows through the GEMV ops too, on the tensor cores (backends/gemv_mma.py)
    # 12: the decode attention loads keys and values that are step inputs before its PDL wait (kv_ready), and
    # runs 2 warps a program in small split launches
    compile = "qeffbuild.backends.inductor:compile_model"
    session = "qeffbuild.backends.inductor:InductorSession"
    runtimes = (Runtime("inductor", "the program compiled by Inductor from its cache artifacts", "inductor"),)
    options = InductorOptions

    def unavailable(self, device: str) -> str | None:
        return super().unavailable(device) or (cuda_unavailable() if device == "cuda" else None)

    def tool_versions(self, device: str) -> dict[str, str]:
        # Inductor's kernels are specific to the GPU kind and CUDA version: they are part of the key
        return gpu_facts() if device == "cuda" else {}

    def environment(self) -> str | None:
        facts = gpu_facts()
        if not facts:
            return None
        return (f"{facts['gpu']} (compute capability {facts['compute_capability']}, driver {facts['cuda_driver']}), "
                f"torch built with CUDA {facts['torch_cuda']}")


def compile_model(ctx: StepContext) -> None:
    import torch

    from ..pipeline.torchutil import example_inputs, load_program, share_precompiled_headers, strict_fp32, torch_device
    from ..runtimes.io import read_io

    share_precompiled_headers()  # before the private caches below: the headers are not part of the artifact
    p = ctx.params
    src = ctx.inputs["program"]
    io = read_io(src)
    device = p["device"]
    shapes = p.get("shapes") or io["shapes"]  # the compile specializes to these
    strict_fp32()
    shutil.copy2(src / "io.json", ctx.out / "io.json")
    options = InductorOptions(**p.get("options", {}))
    tuning = options.compile_options()
    allowed = options.custom_ops(device)
    (ctx.out / TUNING).write_text(json.dumps(tuning) + "\n")
    module = load_program(src / "program.pt2").module()
    if attention.OP in allowed:
        routed = attention.route(module, device, write_state=attention.WRITE_OP in allowed)
        print(f"attention routed to {attention.OP}: {routed} call(s)")
    step = _FlatStep(module, io)
    feeds = example_inputs(shapes, io["inputs"], torch_device(device))
    args = [feeds[name] for name in io["inputs"]]
    # A private cache folder: every kernel is compiled (and recorded) in this step, none borrowed from
    # an earlier build in the machine's shared cache, so the saved artifact is complete.
    with tempfile.TemporaryDirectory(prefix=BUILD_CACHE_PREFIX) as cache, _private_caches(Path(cache)):
        t0 = time.perf_counter()
        compiled, weights, custom_ops = _precompile(step, step.weights(), args, tuning, allowed,
                                                    options.gemv_max_rows)
        compiled.save(path=str(ctx.out / ARTIFACT), format="binary")
        with _recording_choices() as chosen:
            for _ in range(2):  # run it: Triton picks its kernels' launch configs now, and they are saved below
                compiled(*weights.values(), *(a.clone() for a in args))
        compile_s = time.perf_counter() - t0
        tuned = {**_chosen_launch_configs(), **chosen}
    _save_weights(weights, ctx.out / WEIGHTS)
    (ctx.out / AUTOTUNED).write_text(json.dumps(tuned, indent=1) + "\n")
    size = (ctx.out / ARTIFACT).stat().st_size
    meta = {"precompiled": "standalone_compile", "options": tuning, "device": device, "shapes": shapes,
            "torch": torch.__version__, "cuda": torch.version.cuda, "compile_s": round(compile_s, 2),
            "artifact_bytes": size, "weights": list(weights), "custom_ops": custom_ops,
            "capability": list(torch.cuda.get_device_capability()) if device == "cuda" else None}
    (ctx.out / "inductor.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"inductor for {device}, shapes {shapes}: compiled and ran in {compile_s:.1f} s; artifact "
          f"{size / 1e6:.1f} MB, {len(weights)} weight tensors; {len(tuned)} autotuned kernel configs")


class _FlatStep:
    """The exported program as one positional function of its inputs (io.json's order) returning a flat tuple,
    with each retained state written into the input it came from (Inductor fuses the write into the kernel that
    makes the new state; out of place, the loop copied every state back: twice the kernels)."""

    def __init__(self, module: Any, io: dict[str, Any]) -> None:
        from ..runtimes.io import retained_pairs

        self.module = module
        self.names = list(io["inputs"])
        self.positional = io.get("call") == "positional"
        self.pairs = retained_pairs(io) if self.positional else []

    def weights(self) -> dict[str, Any]:
        """The module's parameters and buffers by name, detached (an inference graph). A tied weight is listed
        once, under its first name (``named_parameters``' default); the trace ties its other names back."""
        out: dict[str, Any] = {}
        for name, t in [*self.module.named_parameters(), *self.module.named_buffers()]:
            out[name] = t.detach()
        return out

    def __call__(self, *args: Any) -> tuple[Any, ...]:
        import torch

        out = self.module(*args) if self.positional else self.module(**dict(zip(self.names, args, strict=True)))
        flat = [out] if isinstance(out, torch.Tensor) else list(out.values()) if isinstance(out, dict) else list(out)
        for i, o in self.pairs:
            if flat[o] is not args[i]:  # a state the step wrote in place (attention.WRITE_OP) needs no copy
                args[i].copy_(flat[o])
        written = {o for _, o in self.pairs}
        return tuple(v for o, v in enumerate(flat) if o not in written)


def _precompile(step: _FlatStep, weights: dict[str, Any], args: list[Any], tuning: dict[str, bool],
                allowed: list[str], gemv_rows: int = 1) -> tuple[Any, dict[str, Any], list[str]]:
    """One ATen graph of (weights..., inputs...) compiled by Inductor for these shapes, as a saveable artifact; the
    weights it takes, in order (the graph's constants first, then the weights it reads); the qeffbuild ops (of
    ``allowed``) it calls, which a session must define before loading it (defining one costs ~0.2 s)."""
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    names = list(weights)

    def flat(*values: Any) -> Any:
        return _call_with(step, dict(zip(names, values[:len(names)], strict=True)), values[len(names):])

    with torch.no_grad():
        graph = make_fx(flat, decomposition_table=_decompositions(allowed, gemv_rows),
                        tracing_mode="fake")(*weights.values(), *args)
        if gemv.FUSED_OP in allowed:
            folded = gemv.fuse_neighbours(graph, weights)
            print("folded into the GEMVs: " + ", ".join(f"{n} {what}" for what, n in folded.items()))
        taken = _graph_inputs(graph, weights, len(args))
        used = sorted(_ops_called(graph) & set(allowed))
        compiled = torch._inductor.standalone_compile(graph, [*taken.values(), *args],
                                                      dynamic_shapes="from_example_inputs",
                                                      options={"config_patches": tuning} if tuning else {})
    return compiled, taken, used


def _ops_called(graph: Any) -> set[str]:
    """The operators a traced graph calls, by schema name (``aten::mm``, ``qeffbuild::gemv``)."""
    from ..pipeline.torchutil import op_name

    return {op_name(node) for node in graph.graph.nodes if node.op == "call_function"} - {""}


def _graph_inputs(graph: Any, weights: dict[str, Any], n_inputs: int) -> dict[str, Any]:
    """Make every tensor the graph holds an input of it, and drop the weights it never reads.

    A saved artifact is called with its inputs only: a constant the trace kept as an attribute (a scale, a mask
    made at export) is lifted to an input by AOTAutograd when compiling, but nothing supplies it after a load,
    so each becomes an explicit input here, saved beside the weights. Unread weights would be carried to the
    device for nothing (an exported graph may hold the whole model's parameters)."""
    nodes = graph.graph
    placeholders = [n for n in nodes.nodes if n.op == "placeholder"]
    weight_nodes = placeholders[:len(weights)]
    assert len(placeholders) == len(weights) + n_inputs
    taken: dict[str, Any] = {}
    with nodes.inserting_before(placeholders[0]):
        for node in [n for n in nodes.nodes if n.op == "get_attr"]:
            value = getattr(graph, node.target)
            lifted = nodes.placeholder(f"constant_{node.target}")
            lifted.meta = dict(node.meta)
            node.replace_all_uses_with(lifted)
            nodes.erase_node(node)
            delattr(graph, node.target)
            taken[f"constant:{node.target}"] = value
    for node, (name, value) in zip(weight_nodes, weights.items(), strict=True):
        if node.users:
            taken[name] = value
        else:
            nodes.erase_node(node)
    graph.recompile()
    return taken


def _call_with(step: _FlatStep, weights: dict[str, Any], args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``torch.func.functional_call`` for the step around the module (functional_call itself is this context
    around ``module(*args)``): the weights become graph inputs, tied ones tied."""
    from torch.nn.utils.stateless import _reparametrize_module

    with _reparametrize_module(step.module, weights, tie_weights=True):
        return step(*args)


def _save_weights(weights: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors = {}
    for name, t in weights.items():
        # safetensors stores each storage once: a buffer aliasing another tensor is saved as its own copy
        t = t.contiguous()
        tensors[name] = t.clone() if t.data_ptr() in seen else t
        seen.add(t.data_ptr())
    save_file({k: v.cpu() for k, v in tensors.items()}, str(path))


def _decompositions(custom_ops: list[str], gemv_rows: int = 1) -> dict[Any, Any]:
    """The trace's decompositions: the eligible products of up to ``gemv_rows`` rows go to ``qeffbuild::gemv`` when
    it is chosen."""
    return gemv.decompositions(gemv_rows) if gemv.OP in custom_ops else {}


def _register_custom_ops(folder: Path) -> None:
    """Define the qeffbuild ops a saved artifact calls (its output code names them) before it is loaded."""
    listed = _meta(folder).get("custom_ops", [])
    for ops in (gemv, attention):
        named = [op for op in ops.OPS if op in listed]
        if named:
            ops.register(named)


def _config_of(launcher: Any) -> dict[str, Any] | None:
    config = getattr(launcher, "config", None)
    if config is None:
        return None
    return {"kwargs": dict(config.kwargs), "num_warps": config.num_warps, "num_stages": config.num_stages}


def _chosen_launch_configs() -> dict[str, dict[str, Any]]:
    """The launch config each Triton kernel of this process settled on, by its source file's name (a hash of the
    kernel's code, the same in any cache folder): what the build ran, to be pinned in every later process.

    Inductor's cache artifacts hold the kernels with all their candidate configs but not which one won, and where a
    restored ``.best_config`` is looked for depends on torch's version and, for a kernel loaded from the artifact's
    bundle, on the build's deleted cache folder. So the choice is recorded here, by kernel."""
    import gc
    import warnings

    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    chosen: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():  # isinstance on every live object touches deprecated torch aliases, which warn
        warnings.simplefilter("ignore", FutureWarning)
        kernels = [k for k in gc.get_objects() if isinstance(k, CachingAutotuner)]
    for kernel in kernels:
        # a kernel never launched has launchers None (or empty): it chose nothing
        keys, launchers = _kernel_keys(kernel), getattr(kernel, "launchers", None) or []
        if keys and len(launchers) == 1 and len(getattr(kernel, "configs", None) or []) > 1:
            config = _config_of(launchers[0])
            if config is not None:
                chosen[keys[0]] = config
    return chosen


@contextmanager
def _recording_choices() -> Iterator[dict[str, dict[str, Any]]]:
    """The launch config each Triton kernel settles on while the block runs, taken as Inductor's
    ``autotune_to_one_config`` picks it (the scan of live kernels above found none under torch 2.11, where the
    winners are pruned into the kernel bundle: a kernel tuned at its first run kept all its candidates there)."""
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    chosen: dict[str, dict[str, Any]] = {}
    tune = CachingAutotuner.autotune_to_one_config

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = tune(self, *args, **kwargs)
        keys, launchers = _kernel_keys(self), self.launchers or []
        config = _config_of(launchers[0]) if len(launchers) == 1 else None
        if keys and config is not None:
            chosen[keys[0]] = config
        return out

    CachingAutotuner.autotune_to_one_config = recording  # type: ignore[method-assign]
    try:
        yield chosen
    finally:
        CachingAutotuner.autotune_to_one_config = tune  # type: ignore[method-assign]


def _kernel_keys(kernel: Any) -> list[str]:
    """How a record names a kernel, most exact first: a hash of its Triton source (the same code in any process
    and cache folder), then its source file's name (a hash Inductor makes of the module; records before v7)."""
    import hashlib

    keys = []
    src = getattr(getattr(kernel, "fn", None), "src", None)
    if isinstance(src, str) and src:
        keys.append("src-" + hashlib.sha256(src.encode()).hexdigest()[:32])
    filename = getattr(kernel, "filename", None)
    if filename:
        keys.append(Path(str(filename)).name)
    return keys


_PINNED: dict[str, dict[str, Any]] = {}  # kernel source name -> launch config, for every folder this process loaded


def _pin_launch_configs(folder: Path) -> None:
    """Make each loaded kernel run the launch config the build chose for it, without benchmarking its candidates.

    Inductor benchmarks a multi-config kernel on its first call (``autotune_to_one_config``); for a kernel the
    build recorded, the recorded config is taken instead when it is one of the kernel's candidates. Others (a
    folder from before the record, a config found by coordinate descent) are tuned as Inductor would."""
    try:
        saved = json.loads((folder / AUTOTUNED).read_text())
    except (OSError, ValueError):
        return
    if not isinstance(saved, dict) or not all(isinstance(v, dict) and "kwargs" in v for v in saved.values()):
        return  # an older build's record (.best_config files by path): nothing to pin
    _PINNED.update(saved)
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    tune = CachingAutotuner.autotune_to_one_config
    if getattr(tune, "qeffbuild_pinned", False):
        return

    def autotune_to_one_config(self: Any, *args: Any, **kwargs: Any) -> Any:
        want = next((_PINNED[k] for k in _kernel_keys(self) if k in _PINNED), None)
        match = [launcher for launcher in self.launchers or [] if _config_of(launcher) == want] if want else []
        if len(match) != 1:
            return tune(self, *args, **kwargs)
        self.launchers = match
        return None

    autotune_to_one_config.qeffbuild_pinned = True  # type: ignore[attr-defined]
    CachingAutotuner.autotune_to_one_config = autotune_to_one_config  # type: ignore[method-assign]


def count_kernel_benchmarks() -> list[int]:
    """Count the Triton kernel benchmarks this process runs from now on (``[n]``, updated in place).

    Inductor's own counter cannot say: an FX-graph cache hit adds the counts its compile made (the build's) to
    this process's counters. This installs an import hook that wraps ``CachingAutotuner.bench`` when Inductor's
    runtime is first imported, so calling it imports nothing (a start-up measurement stays honest); call it
    before anything imports torch's Inductor."""
    import importlib.abc
    import importlib.util
    import sys

    count = [0]
    target = "torch._inductor.runtime.triton_heuristics"

    def wrap(module: Any) -> None:
        bench = module.CachingAutotuner.bench

        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            return bench(self, *args, **kwargs)

        module.CachingAutotuner.bench = counted

    if target in sys.modules:
        wrap(sys.modules[target])
        return count

    class Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any, target_module: Any = None) -> Any:
            if name != target:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return spec
            run_module = spec.loader.exec_module

            def exec_module(module: Any) -> None:
                run_module(module)
                wrap(module)

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, Hook())
    return count


@contextmanager
def _private_caches(folder: Path) -> Iterator[None]:
    names = {"TORCHINDUCTOR_CACHE_DIR": str(folder), "TRITON_CACHE_DIR": str(folder / "triton")}
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)  # read by Inductor and Triton at each use, not at import
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class InductorSession:
    """The precompiled step (``precompiled.bin``) over its weights (``weights.safetensors``).

    ``run`` takes and returns numpy (every runtime's interface); ``run_tensors`` takes and returns torch
    tensors on the session's device, so a decode loop keeps its state there. ``capturable``: on CUDA a
    caller may capture calls into a CUDA graph (the compiled code does no host work once warm).
    """

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        from ..pipeline.torchutil import strict_fp32, torch_device
        from ..runtimes.io import read_io, retained_pairs
        from ..runtimes.torch import TorchCalling

        strict_fp32()
        self.io = read_io(folder)
        names = list(self.io["inputs"])
        _register_custom_ops(folder)  # the output code calls them
        self._compiled = _load_compiled(folder)
        _pin_launch_configs(folder)  # before the first call, where Inductor would benchmark the candidates
        self._weights = _load_weights(folder, torch_device(device))
        self._pairs = retained_pairs(self.io) if self.io.get("call") == "positional" else []
        self.capturable = device == "cuda"
        if self._pairs:
            fn: Any = self._pure
        elif self.io.get("call") == "positional":
            fn = self._call
        else:
            fn = lambda **feeds: self._call(*(feeds[n] for n in names))  # noqa: E731
        self._calling = TorchCalling(fn, self.io, device)
        self.device = self._calling.device

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        return self._calling.run(feeds)

    def run_tensors(self, feeds: dict[str, Any]) -> list[Any]:
        return self._calling.run_tensors(feeds)

    @property
    def retained_in_place(self) -> bool:
        """A decoder step whose compiled code writes its new state into its ``past_*`` inputs
        (:meth:`step_in_place`)."""
        return bool(self._pairs)

    def step_in_place(self, feeds: dict[str, Any]) -> list[Any]:
        """One step that writes each ``present_X`` into the ``past_X`` tensor it was given (one kernel per state:
        the write is fused into the kernel that makes the new state, with no copy back) and returns the other
        outputs (the logits). The decode loop's state buffers are those inputs."""
        import torch

        with torch.no_grad():
            return self._call(*(feeds[name] for name in self.io["inputs"]))

    def _call(self, *args: Any) -> list[Any]:
        return list(self._compiled(*self._weights, *args))

    def _pure(self, *args: Any) -> list[Any]:
        """The step as a function (every runtime's contract): the compiled step writes into copies of the state."""
        inputs = list(args)
        for i, _ in self._pairs:
            inputs[i] = inputs[i].clone()
        kept = iter(self._call(*inputs))
        written = {o: inputs[i] for i, o in self._pairs}
        return [written[o] if o in written else next(kept) for o in range(len(self.io["outputs"]))]


def _load_compiled(folder: Path) -> Any:
    """The saved artifact, or a ModelLoadError that says to rebuild (a folder from an older qeffbuild, or built
    under another torch: the artifact is bound to the torch build that made it)."""
    import torch

    from ..errors import ModelLoadError

    path = folder / ARTIFACT
    if not path.is_file():
        raise ModelLoadError(f"{folder} has no {ARTIFACT} (built by an older qeffbuild?); rebuild the specialization")
    meta = _meta(folder)
    if meta.get("torch") != torch.__version__:
        raise ModelLoadError(f"{folder} was compiled under torch {meta.get('torch')}, this is torch "
                             f"{torch.__version__}: rebuild the specialization here")
    try:
        # One compile thread while loading: the output code hands each Triton kernel to Inductor's async
        # compiler, whose first use starts a pool of compile workers (one per core, each importing torch)
        # even when every kernel is already built. Those processes competed with the session for the CPU:
        # on a 16-core GPU host the first utterances after a load took ~110 ms more for their features.
        from torch._inductor import config

        _defer_template_compiles()
        with config.patch(compile_threads=1), _no_backend_hash():
            return torch._inductor.CompiledArtifact.load(path=str(path), format="binary")
    except (AssertionError, RuntimeError, EOFError, ValueError) as e:  # torch asserts on a foreign build's key
        raise ModelLoadError(f"{path} cannot be loaded by this torch build ({type(e).__name__}: {e}); rebuild "
                             "the specialization") from e


@contextmanager
def _no_backend_hash() -> Iterator[None]:
    """Load without hashing Triton's sources. On a cache hit Inductor asks for ``triton_hash_with_backend`` (0.37 s
    hashing Triton's source files, plus its driver) only to key the bundled remote autotune cache, which is off
    outside Meta's fbcode: ``AutotuneCacheBundler.begin_compile`` returns before reading it. Each kernel's own
    autotune metadata carries the hash its build computed, in the saved code."""
    import torch.utils._triton as triton_utils

    real = triton_utils.triton_hash_with_backend
    triton_utils.triton_hash_with_backend = lambda: None  # type: ignore[assignment]
    try:
        yield
    finally:
        triton_utils.triton_hash_with_backend = real


def _defer_template_compiles() -> None:
    """Compile each of Inductor's Jinja kernel templates when it is first rendered, not when it is defined.

    Inductor defines its GEMM, convolution and attention templates (about 20 ``TritonTemplate`` objects) when its
    kernel modules are imported, and each compiles its Jinja source there: 0.37 s on the 2-core CPU host and 0.46 s
    on the H200's, on the load path of every session, which runs precompiled code and renders none of them. A
    template that is rendered later (a compile in this process) is compiled then, to the same Jinja template."""
    from torch._inductor.codegen import common

    compile_now = common.KernelTemplate.__dict__["_template_from_string"].__func__
    if getattr(compile_now, "qeffbuild_deferred", False):
        return

    def deferred(source: str) -> _DeferredTemplate:
        return _DeferredTemplate(compile_now, source)

    deferred.qeffbuild_deferred = True  # type: ignore[attr-defined]
    common.KernelTemplate._template_from_string = staticmethod(deferred)  # type: ignore[method-assign]


class _DeferredTemplate:
    """A Jinja template compiled on its first attribute use (``render``)."""

    def __init__(self, compile_now: Any, source: str) -> None:
        self._compile_now, self._source, self._template = compile_now, source, None

    def __getattr__(self, name: str) -> Any:  # only for what the instance lacks: the template's own attributes
        if self._template is None:
            self._template = self._compile_now(self._source)
        return getattr(self._template, name)


def _load_weights(folder: Path, device: str) -> list[Any]:
    from safetensors.torch import load_file

    from ..errors import ModelLoadError

    names = _meta(folder).get("weights", [])
    tensors = load_file(str(folder / WEIGHTS), device=device)
    missing = [name for name in names if name not in tensors]
    if missing:
        raise ModelLoadError(f"{folder / WEIGHTS} lacks {', '.join(missing[:3])} (of {len(names)} weights the "
                             "compiled step takes); rebuild the specialization")
    return [tensors[name] for name in names]


def _meta(folder: Path) -> dict[str, Any]:
    """The compile step's inductor.json ({} when missing or unreadable: the callers then refuse with the fix)."""
    try:
        meta = json.loads((folder / "inductor.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}
