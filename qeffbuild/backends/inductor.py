"""The `inductor` backend: the exported program plus Inductor's cache artifacts for its shapes.

AOTInductor packages for CUDA segfault on load on our GPU machine (torch 2.11, CUDA 13), so CUDA
builds go through ``torch.compile`` instead. The compile step compiles the program for the
specialization's fixed shapes and runs it, then saves Inductor's portable cache artifacts
(``torch.compiler.save_cache_artifacts``: FX graph, AOTAutograd and Triton kernel caches). A
session loads those artifacts first, so compiling in a fresh process finds every kernel built: no
Inductor code generation is left, only Dynamo's trace.

CUDA graphs are not Inductor's (``mode="reduce-overhead"``): its CUDA-graph trees copy every
non-parameter input into their own buffers and check them in Python on each call, which costs more
than a small decoder step. The session says it is ``capturable`` instead, and the decode loop
captures a whole step (decoder, state update, argmax) over its own static buffers as one graph
(``decoding/device.py``); a batch of embeddings is GPU-bound and needs none.

The artifacts are valid only for the torch version, the CUDA it was built with and the GPU kind
they were made on, so those enter the step key (``tool_versions``): a build on another GPU kind is
another key. On CPU the same backend runs Inductor's C++ code (no CUDA graphs), which is how the
tests exercise it on machines without a GPU.
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

ARTIFACT = "inductor-cache.bin"
AUTOTUNED = "autotuned.json"  # Triton's chosen launch configs, which the cache artifacts leave out
TUNING = "tuning.json"  # [specializations.X.inductor] as torch.compile options


class InductorOptions(Table):
    """[specializations.NAME.inductor]: Inductor's tuning for this specialization (part of the key; a session
    compiles with the same settings, so it finds the saved kernels)."""

    max_autotune: bool = Field(False, description="Benchmark Triton templates against cuBLAS for every matmul and "
                                                  "keep the fastest (longer compile; the choice is saved).")
    coordinate_descent_tuning: bool = Field(False, description="Tune each generated kernel's launch config by "
                                                               "coordinate descent (as gpt-fast does for decoding).")

    def compile_options(self) -> dict[str, bool]:
        """torch.compile's ``options``: only those set, so the default build compiles exactly as before."""
        return {k: v for k, v in self.model_dump().items() if v}


class InductorBackend(Backend):
    name = "inductor"
    description = "torch.compile (Inductor): the program plus Inductor's cache artifacts for its shapes"
    consumes = "program"
    devices = ("cpu", "cuda")
    refused_dtypes: ClassVar[dict[str, str]] = {
        "int8": "int8 here is ONNX Runtime's dynamic quantization; torch's CPU int8 paths (torchao, PT2E) are not "
                "built into Inductor packages by qeffbuild yet: use `ort` for int8",
    }
    toolchain = ("torch", "triton")
    version = 3  # 2: no CUDA-graph trees (mode default); the decode loop captures whole steps. 3: a decoder
    # step writes its retained state in place (InductorSession.step_in_place)
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


MODE = "default"  # Inductor's kernels, no CUDA graphs of its own (see above); the key holds it via version


def compile_model(ctx: StepContext) -> None:
    import torch

    from ..pipeline.torchutil import example_inputs, strict_fp32, torch_device

    p = ctx.params
    src = ctx.inputs["program"]
    io = json.loads((src / "io.json").read_text())
    device = p["device"]
    shapes = p.get("shapes") or io["shapes"]  # the compile specializes to these (dynamic=False)
    strict_fp32()
    for name in ("program.pt2", "io.json"):
        shutil.copy2(src / name, ctx.out / name)
    # A private cache folder: every kernel is compiled (and recorded) in this step, none borrowed from
    # an earlier build in the machine's shared cache, so the saved artifacts are complete.
    tuning = InductorOptions(**p.get("options", {})).compile_options()
    (ctx.out / TUNING).write_text(json.dumps(tuning) + "\n")  # the session compiles with the same options
    with tempfile.TemporaryDirectory(prefix="qeffbuild-inductor-") as cache, _private_caches(Path(cache)):
        session = InductorSession(ctx.out, device, artifacts=False)
        feeds = example_inputs(shapes, io["inputs"], torch_device(device))
        t0 = time.perf_counter()
        for _ in range(2):  # compile, then one call on the compiled code
            session.run_tensors(feeds)
        compile_s = time.perf_counter() - t0
        saved = torch.compiler.save_cache_artifacts()
        tuned = _best_configs(Path(cache))
    if saved is None:
        raise RuntimeError("torch.compiler.save_cache_artifacts() returned nothing: Inductor cached no artifact")
    blob, info = saved
    (ctx.out / ARTIFACT).write_bytes(blob)
    (ctx.out / AUTOTUNED).write_text(json.dumps(tuned, indent=1) + "\n")
    meta = {"mode": MODE, "options": tuning, "device": device, "shapes": shapes, "torch": torch.__version__,
            "cuda": torch.version.cuda, "compile_s": round(compile_s, 2), "artifact_bytes": len(blob),
            "capability": list(torch.cuda.get_device_capability()) if device == "cuda" else None}
    (ctx.out / "inductor.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"inductor ({meta['mode']}) for {device}, shapes {shapes}: compiled and ran in {compile_s:.1f} s; "
          f"cache artifacts {len(blob) / 1e6:.1f} MB ({_describe(info)}); {len(tuned)} autotuned kernel configs")


def _best_configs(cache: Path) -> dict[str, str]:
    """Triton's autotuning results (``*.best_config`` beside each kernel), by path under the cache folder.

    Inductor's cache artifacts hold the kernels but not which of a kernel's launch configs won, so a
    fresh process would benchmark them all again on its first call (~1.5 s for a Whisper-tiny step).
    Kernel paths are content hashes, the same under any cache folder."""
    return {str(f.relative_to(cache)): f.read_text() for f in sorted(cache.rglob("*.best_config"))}


def _restore_best_configs(folder: Path) -> None:
    saved = folder / AUTOTUNED
    if not saved.is_file():
        return
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    root = Path(cache_dir())
    for rel, text in json.loads(saved.read_text()).items():
        target = (root / rel).resolve()
        if root.resolve() in target.parents and not target.exists():  # never outside the cache folder
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)


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


def _describe(info: Any) -> str:
    counts = {k: len(v) for k, v in (getattr(info, "artifacts", None) or {}).items() if v}
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "no breakdown"


class InductorSession:
    """The program compiled by ``torch.compile``, its kernels taken from the saved cache artifacts.

    ``run`` takes and returns numpy (every runtime's interface); ``run_tensors`` takes and returns torch
    tensors on the session's device, so a decode loop keeps its state there. ``capturable``: on CUDA a
    caller may capture calls into a CUDA graph (the compiled code does no host work once warm).
    """

    def __init__(self, folder: Path, device: str = "cpu", artifacts: bool = True) -> None:
        import torch

        from ..pipeline.torchutil import load_program, strict_fp32
        from ..runtimes.io import read_io, retained_pairs
        from ..runtimes.torch import TorchCalling

        strict_fp32()
        if artifacts:
            blob = folder / ARTIFACT
            if not blob.is_file():
                from ..errors import ModelLoadError

                raise ModelLoadError(f"{folder} has no {ARTIFACT}; rebuild the specialization")
            torch.compiler.load_cache_artifacts(blob.read_bytes())
            _restore_best_configs(folder)
        program = load_program(folder / "program.pt2")
        io = read_io(folder)
        tuning = json.loads((folder / TUNING).read_text()) if (folder / TUNING).is_file() else {}
        # torch.compile takes mode or options, not both; MODE is the default mode
        settings: dict[str, Any] = {"options": tuning} if tuning else {"mode": MODE}
        self._pairs = retained_pairs(io) if io.get("call") == "positional" else []
        module = program.module()
        self._step = torch.compile(_writing_state(module, self._pairs) if self._pairs else module,
                                   fullgraph=True, dynamic=False, **settings)
        self.capturable = device == "cuda"
        self._calling = TorchCalling(self._pure if self._pairs else self._step, io, device)
        self.io = self._calling.io
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
            return list(self._step(*(feeds[name] for name in self.io["inputs"])))

    def _pure(self, *args: Any) -> list[Any]:
        """The step as a function (every runtime's contract): the compiled step writes into copies of the state."""
        inputs = list(args)
        for i, _ in self._pairs:
            inputs[i] = inputs[i].clone()
        kept = iter(self._step(*inputs))
        written = {o: inputs[i] for i, o in self._pairs}
        return [written[o] if o in written else next(kept) for o in range(len(self.io["outputs"]))]


def _writing_state(module: Any, pairs: list[tuple[int, int]]) -> Any:
    """``module``'s step, writing each retained state into its input: Inductor fuses the write into the kernel
    that computes the new state (out-of-place, the loop copied every state back: twice the kernels)."""
    written = {o for _, o in pairs}

    def step(*args: Any) -> tuple[Any, ...]:
        out = module(*args)
        for i, o in pairs:
            args[i].copy_(out[o])
        return tuple(v for o, v in enumerate(out) if o not in written)

    return step
