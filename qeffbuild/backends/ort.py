"""The `ort` backend: an ONNX Runtime offline-optimized model with fixed input shapes, and its session."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, NoReturn

from pydantic import Field

from ..core.plugins import Backend, Runtime
from ..core.steps import StepContext
from ..core.tables import Table
from ..errors import BackendUnavailable, BuildError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class OrtOptions(Table):
    """[specializations.NAME.ort]: how `ort` builds this specialization (part of the key)."""

    int8_float_layers: Literal["down-projections", "none"] = Field(
        "down-projections",
        description="dtype = \"int8\": which linear layers keep float32 weights. \"down-projections\" (a weight with "
                    "at least twice as many inputs as outputs: the FFN's second layer, fed by the activation's "
                    "outliers) is the accurate default (the real all-MiniLM-L6-v2's lowest cosine 0.981 → 0.990); "
                    "\"none\" quantizes every linear layer, as CTranslate2's int8 does (faster encoders; check "
                    "the validation's accuracy bound).")
    int8_activations: Literal["per-tensor", "per-token"] = Field(
        "per-tensor",
        description="dtype = \"int8\": how each product's activations are scaled to int8. \"per-tensor\" is ONNX "
                    "Runtime's dynamic quantization (one scale for the whole input, set by its largest value); "
                    "\"per-token\" gives each token (row) its own scale, so an outlier channel coarsens only its "
                    "own rows: more exact, with int8_float_layers = \"none\" too (the real all-MiniLM-L6-v2's "
                    "lowest cosine ~0.993 against 0.985), at a few more small operators a product.")


class OrtBackend(Backend):
    name = "ort"
    description = "ONNX Runtime offline-optimized model, fixed shapes"
    consumes = "onnx"
    devices = ("cpu", "cuda")
    refused_dtypes: ClassVar[dict[str, str]] = {
        "bfloat16": "ONNX Runtime has no bfloat16 kernels for ops such as Add on CPU, and onnx.checker rejects "
                    "bfloat16 Conv; use float16 or float32 with `ort`, or bfloat16 with `aoti`",
    }
    toolchain = ("onnx", "onnxruntime")
    version = 3  # v2: state.json (the retained state a decode step may update in place); v3: CPU_SLOW_FUSIONS off
    compile = "qeffbuild.backends.ort:compile_model"
    session = "qeffbuild.backends.ort:OrtSession"
    runtimes = (Runtime("onnxruntime", "ONNX Runtime on the `ort` compile artifact", "ort"),)

    options = OrtOptions
    # packed projections and one-kernel GELU: what ONNX Runtime's optimizer misses in our exports (onnx_passes.py)
    onnx_passes: ClassVar[tuple[str, ...]] = ("ort-fusions",)

    def passes_for(self, dtype: str) -> tuple[str, ...]:
        # int8: ONNX Runtime's dynamic quantization of MatMul/Gemm weights, its own cached step
        return (*self.onnx_passes, "int8-dynamic") if dtype == "int8" else self.onnx_passes

    def pass_params(self, name: str, options: Any) -> dict[str, Any]:
        if name == "int8-dynamic" and options is not None:
            params = {"keep_float": options.int8_float_layers}
            if options.int8_activations != "per-tensor":  # only then in the key: per-tensor artifacts stay cached
                params["activations"] = options.int8_activations
            return params
        return {}

    def plan(self, fail: Callable[[str, str], NoReturn], params: dict[str, Any], options: Any) -> dict[str, Any]:
        for key in ("int8_float_layers", "int8_activations"):
            if options is not None and params.get("dtype") != "int8" and \
                    getattr(options, key) != OrtOptions.model_fields[key].default:
                fail(key, f"only an int8 specialization quantizes; this one is {params.get('dtype')}: "
                          f"remove {key} or set dtype = \"int8\"")
        return params

    def unavailable(self, device: str) -> str | None:
        why = super().unavailable(device)
        if why or device != "cuda":
            return why
        import onnxruntime  # only for a CUDA specialization: CPU plans stay light

        providers = onnxruntime.get_available_providers()
        if PROVIDERS["cuda"] not in providers:
            return f"this ONNX Runtime has no CUDAExecutionProvider (it has {', '.join(providers)}); install " \
                   "onnxruntime-gpu"
        return None


# ONNX Runtime's own fusions that make a CPU graph slower (ONNX Runtime 1.32, 2 cores, float32, each op alone):
# - SkipLayerNormFusion: its SkipLayerNormalization kernel took 5-6x the time of the Add and LayerNormalization it
#   replaces (129 against 21 us at 4 x 16 x 384; 2,970 against 582 us at whisper-tiny's encoder, 1 x 1500 x 384);
# - MatMulAddFusion: a 3-D MatMul + bias Add became Reshape, Gemm, Reshape, 5-13 % slower (7.2 against 6.3 ms for
#   whisper-tiny's fc1 over 1,500 frames; 217 against 205 us for MiniLM's packed q/k/v at 4 x 16).
# Together 10-12 % of an all-MiniLM-L6-v2 call at b4 x seq 16 and x 64. On CUDA both fusions stay (its kernels are
# the fast path there).
CPU_SLOW_FUSIONS = ("SkipLayerNormFusion", "MatMulAddFusion")


def fix_shapes(model: Any, shapes: dict[str, list[int]]) -> None:
    """Replace the symbolic dims of the graph inputs by the specialization's sizes."""
    for inp in model.graph.input:
        if inp.name not in shapes:
            continue
        dims = inp.type.tensor_type.shape.dim
        want = shapes[inp.name]
        if len(dims) != len(want):
            raise ValueError(f"input {inp.name} has rank {len(dims)}, the specialization gives {want}")
        for dim, size in zip(dims, want, strict=True):
            dim.ClearField("dim_param")
            dim.dim_value = int(size)


def compile_model(ctx: StepContext) -> None:
    import onnx
    import onnxruntime as ort

    from ..pipeline.onnx_passes import DATA_FILE, PROTOBUF_LIMIT, in_place_state, load_model, model_bytes

    p = ctx.params
    provider = PROVIDERS[p["device"]]
    if provider not in ort.get_available_providers():
        raise BackendUnavailable(f"ONNX Runtime here has no {provider} (has {ort.get_available_providers()})")
    model = load_model(ctx.inputs["onnx"] / "model.onnx")
    shapes = p.get("shapes") or json.loads((ctx.inputs["onnx"] / "io.json").read_text())["shapes"]
    fix_shapes(model, shapes)
    # over protobuf's 2 GiB (whisper-large-v3's decoder in float32 is 3.2 GB) the weights go to a data file, in
    # and out: ONNX Runtime's optimized model would otherwise point at the temporary input's data file
    size = model_bytes(model)
    external = size > PROTOBUF_LIMIT
    _check_room(ctx.out, 2 * size)  # the shape-fixed input and the optimized model
    with tempfile.TemporaryDirectory(dir=ctx.out.parent) as tmp:  # beside the output: the store's disk, not /tmp
        fixed = Path(tmp) / "fixed.onnx"
        onnx.save_model(model, str(fixed), save_as_external_data=external, all_tensors_to_one_file=True,
                        location="fixed.onnx.data", size_threshold=1024)
        del model  # the weights are on disk now; ONNX Runtime reads its own copy
        so = ort.SessionOptions()
        # EXTENDED, not ALL: ALL adds layout changes tied to this CPU, and the artifact may move.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(ctx.out / "model.onnx")
        if external:
            so.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA_FILE)
            so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        slow = list(CPU_SLOW_FUSIONS) if p["device"] == "cpu" else []
        ort.InferenceSession(str(fixed), so, providers=[provider], disabled_optimizers=slow)

    in_place = in_place_state(onnx.load(str(ctx.out / "model.onnx"), load_external_data=False))
    (ctx.out / STATE_FILE).write_text(json.dumps({"in_place": in_place}, indent=1))
    print(f"ONNX Runtime {ort.__version__} optimized model for {provider}, shapes {shapes}; "
          f"{len(in_place)} state input(s) updated in place")


STATE_FILE = "state.json"


def _check_room(folder: Path, needed: int) -> None:
    """Refuse before writing when the disk cannot take ``needed`` bytes: ONNX Runtime's own failure names no cause
    ("Failed to write external initializers"), and its partial files are gone by the time the runner looks."""
    import shutil

    free = shutil.disk_usage(folder).free
    if free < needed + (256 << 20):
        raise BuildError(f"the compile writes about {needed / 1e9:.1f} GB (the model twice: its shape-fixed copy and "
                         f"the optimized one) and {free / 1e9:.1f} GB are free on the disk of the cache ({folder}): "
                         "free space there, or point QEFFBUILD_CACHE_DIR at a larger disk")


# No `ort` session keeps its threads spinning between calls: each spins within a call and stops the moment the
# call returns (ONNX Runtime's `session.force_spinning_stop`). A process calls several sessions in turn (an
# embedding's graph per seq_len, a speech model's encoder and then decoder steps with host work between them), each
# with its own thread pool, and one that spun on after its call took the cores from whichever ran next: the real
# all-MiniLM-L6-v2 at batch 4 took 16-20 and 60-69 ms a call (seq 16, 64) when a validation called its two graphs
# in turn. Threads that never spin (the rule before) hand each operator to a parked thread instead, which a
# decoder step (~100 small operators a call, called in a loop) pays for every token. `python
# benchmarks/ort_thread_pools.py --rounds 4 --ways "no spinning" "spin within a call"`, 2 cores, medians per round:
# MiniLM in turn 9.2-11.4 -> 8.4-8.7 ms (seq 16), 30.9-39.6 -> 29.6-30.2 (seq 64); whisper-tiny dims decoder
# steps 4.7-5.1 -> 4.7-4.8 ms a token (b1), 7.8-8.2 -> 7.4-8.0 (b4); int8 transcriptions 206-213 -> 194-203 ms; the
# same embeddings and transcripts. ONNX Runtime's global thread pool would share the threads instead, but once a
# process makes it, every other InferenceSession in that process (a user's own, onnxruntime.quantization's) must
# opt in or fails to open: not a library's choice to make.
# SPINNING: "within-call" (the rule), "never" (the rule before), "unless-decoder" (the rule before that: every
# session but a decoder step's spun, between calls too); the other two are for that benchmark.
SPINNING = "within-call"


def _session_options(ort: Any, retained: bool) -> Any:
    so = ort.SessionOptions()
    # The artifact is already optimized offline; do not re-optimize at load.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if SPINNING == "within-call":
        so.add_session_config_entry("session.intra_op.allow_spinning", "1")
        so.add_session_config_entry("session.force_spinning_stop", "1")
    elif SPINNING == "never" or retained:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class OrtSession:
    """An `ort` artifact opened in ONNX Runtime: named numpy inputs in, float32 outputs out."""

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        import onnxruntime as ort

        from ..runtimes.io import read_io, retained_pairs

        self.io = read_io(folder)
        so = _session_options(ort, bool(retained_pairs(self.io)))
        self.sess = ort.InferenceSession(str(folder / "model.onnx"), so, providers=[PROVIDERS[device]])
        self.names = [i.name for i in self.sess.get_inputs()]
        self.output_names = [o.name for o in self.sess.get_outputs()]
        # numpy dtype names of the graph's inputs and outputs as ONNX Runtime runs them (io.json says the
        # specialization's dtype: an int8 artifact's state is float32)
        self.dtypes = {v.name: _NUMPY_TYPES.get(v.type, v.type) for v in (*self.sess.get_inputs(),
                                                                          *self.sess.get_outputs())}
        state = folder / STATE_FILE
        # the past inputs whose present output may be written into the same buffer (see `in_place_state`); on
        # the host only: a CUDA session would copy the bound host arrays to the device and back anyway
        self.in_place_state = _in_place_pairs(state) if device == "cpu" else frozenset()
        # (name, shape, numpy dtype) of every output, where all are of a fixed shape and a dtype numpy holds
        self._outputs = [(o.name, o.shape, _NUMPY_TYPES[o.type]) for o in self.sess.get_outputs()] \
            if device == "cpu" and all(map(_preallocatable, self.sess.get_outputs())) else None

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        """The graph's outputs for ``feeds``, in arrays numpy allocated: ONNX Runtime writes them there (bound
        outputs). Its own output buffers start 64 bytes into a 4 KiB page, and a whisper-tiny batch-4 decoder step
        that read the encoder's outputs from them took 7.1–7.5 ms where the same data at any other offset tried
        (0, 16, 32, 128, 512, 2,048 bytes: numpy's own arrays start at 16) took 6.5–6.9
        (`benchmarks/decoder_inputs.py`): the next session's inputs were the slow case."""
        import numpy as np

        from ..runtimes.io import cast_feeds

        cast = cast_feeds(feeds, self.io)
        if self._outputs is None:
            outs = self.sess.run(None, {k: cast[k] for k in self.names})
        else:
            binding = self.sess.io_binding()
            inputs = {k: np.ascontiguousarray(cast[k]) for k in self.names}  # alive until the run: bound by pointer
            for k, value in inputs.items():
                binding.bind_cpu_input(k, value)
            outs = [np.empty(shape, dtype) for _, shape, dtype in self._outputs]
            for (name, _, _), out in zip(self._outputs, outs, strict=True):
                _bind_host_output(binding, name, out)
            self.sess.run_with_iobinding(binding)
        return [o.astype(np.float32, copy=False) if o.dtype.kind == "f" else o for o in outs]

    def bind(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> Callable[[], list[Any]]:
        """A call of the graph with every input and output bound once, by pointer: the caller changes the
        contents of its arrays between calls, and each call writes the outputs named in ``outputs`` into those
        arrays (C-contiguous, the graph's shape and dtype; an output may share an input's buffer where
        ``in_place_state`` allows it). The call returns every output, in the graph's order and dtype; the others
        are arrays allocated here once, overwritten by the next call.

        A decode loop binds its state both ways: ONNX Runtime updates it where the loop keeps it, and a step
        neither allocates an array nor sets up its inputs again (18 of them for whisper-tiny's decoder)."""
        import numpy as np

        binding = self.sess.io_binding()
        for name in self.names:  # bound as they are: a copy made here would not see the caller's changes
            value, dtype = inputs[name], self.dtypes[name]
            if value.dtype.name != dtype or not value.flags.c_contiguous:
                raise ValueError(f"bind: input {name} needs a C-contiguous {dtype} array, got {value.dtype.name}")
            binding.bind_input(name, "cpu", 0, value.dtype, list(value.shape), value.ctypes.data)
        results = []
        for out in self.sess.get_outputs():
            target = outputs.get(out.name)
            if target is None:
                if not _preallocatable(out):
                    raise ValueError(f"bind: output {out.name} is {out.type} {out.shape}; pass an array for it")
                target = np.empty(out.shape, _NUMPY_TYPES[out.type])
            if list(target.shape) != list(out.shape) or not target.flags.c_contiguous or not target.flags.writeable \
                    or _NUMPY_TYPES.get(out.type) != target.dtype.name:
                raise ValueError(f"bind: {out.name} needs a writable C-contiguous {out.type} array of shape "
                                 f"{out.shape}, got {target.dtype.name} {list(target.shape)}")
            _bind_host_output(binding, out.name, target)
            results.append(target)
        sess = self.sess

        def call() -> list[Any]:
            # `inputs` and `results` live as long as this closure: the pointers bound above stay valid
            sess.run_with_iobinding(binding)
            return results

        call.keep_alive = (inputs, binding)  # type: ignore[attr-defined]
        return call


def _preallocatable(output: Any) -> bool:
    """An output of a fixed shape and a dtype numpy holds: its array can be made before the run."""
    return output.type in _NUMPY_TYPES and all(isinstance(d, int) for d in output.shape)


def _bind_host_output(binding: Any, name: str, array: Any) -> None:
    """ONNX Runtime writes output ``name`` into ``array`` (host memory, by pointer: the caller keeps it alive)."""
    binding.bind_output(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)


def _in_place_pairs(path: Path) -> frozenset[str]:
    """The past inputs ``state.json`` lists; none (every step through ``run``: slower, never wrong) when the file
    is missing (an artifact of ort backend v1) or unreadable."""
    try:
        return frozenset(str(past) for past, _present in json.loads(path.read_text())["in_place"])
    except (OSError, ValueError, KeyError, TypeError):
        return frozenset()


_NUMPY_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
                "tensor(int32)": "int32", "tensor(bool)": "bool", "tensor(double)": "float64"}
