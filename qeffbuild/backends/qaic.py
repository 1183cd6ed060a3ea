"""Qualcomm Cloud AI 100: the portable compile bundle (`qaic-bundle`), the QPC (`qaic`) and its runtime.

`qaic-bundle` runs anywhere. From the ONNX export (after the `fp16-clip` and `external-data`
passes) it writes what `qaic-compile` reads, in the formats QEfficient writes them:
``model.onnx`` with named dimensions (``batch_size``, ``seq_len`` …) and retained-state outputs
named ``<input>_RetainedState``, ``specializations.json``, ``custom_io.yaml``, ``mdp_ts_<N>.json``
(more than one card) and ``compile.sh`` — the command line, runnable on an AI 100 host. The
files come from the jinja2 templates in ``templates/qaic/`` (a project's own ``templates/qaic/``
overrides them, and their text enters the key).

`qaic` builds on the bundle: it runs the SDK's ``qaic-compile`` (``QAIC_COMPILER``, else
``/opt/qti-aic/exec/qaic-compile``) and keys the QPC by the SDK version read from the SDK's
``versions/apps.xml`` (and ``platform.xml``), so an SDK upgrade recompiles QPCs and nothing else.
Without the SDK the backend is refused at plan time with the reason; the bundle still builds.

The `qaic` runtime runs a QPC through the SDK's Python runtime (``qaicrt``), as QEfficient's
``QAICInferenceSession`` does. Neither the compiler nor the runtime can run on the machines
qeffbuild is tested on: the tests drive `qaic` with a stand-in compiler script
(``tests/backends/qaic_standin.py``) that checks the arguments and the files they name.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NoReturn

from pydantic import Field, field_validator

from ..core.plugins import Backend, Runtime
from ..core.steps import StepContext
from ..core.tables import Table
from ..errors import BackendUnavailable, BuildError

DEFAULT_SDK = Path("/opt/qti-aic")
DEFAULT_COMPILER = DEFAULT_SDK / "exec" / "qaic-compile"
RETAINED_SUFFIX = "_RetainedState"
BUNDLE_FILES = ("bundle.json", "specializations.json", "custom_io.yaml", "compile.sh")
# Options qeffbuild sets itself: a compiler_options entry for one of them would contradict the manifest.
MANAGED_FLAGS = {
    "aic_hw": "it is always passed", "aic_hw_version": "set aic_hw_version", "m": "the bundle names the ONNX",
    "aic_num_cores": "set num_cores", "convert_to_fp16": "it is always passed", "mxfp6_matmul": "set mxfp6_matmul",
    "retained_state": "it is passed for graphs with retained state",
    "aic_enable_depth_first": "set aic_enable_depth_first", "mos": "set mos",
    "network_specialization_config": "the bundle writes specializations.json",
    "custom_io_list_file": "the bundle writes custom_io.yaml",
    "mdp_load_partition_config": "set num_devices (the bundle writes mdp_ts_<N>.json)",
    "aic_binary_dir": "qeffbuild chooses the output folder",
}


class QaicOptions(Table):
    """[specializations.NAME.qaic]: how `qaic-compile` compiles this specialization (all part of the key)."""

    num_cores: int = Field(16, ge=1, le=64, description="NSP cores per card (-aic-num-cores).")
    num_devices: int = Field(1, ge=1, le=64, description="Cards to tensor-slice over (writes mdp_ts_<N>.json).")
    mxfp6_matmul: bool = Field(False, description="MXFP6-compress MatMul weights (-mxfp6-matmul).")
    mxint8_kv_cache: bool = Field(False, description="Keep the retained KV cache in mxint8 (custom_io.yaml).")
    aic_enable_depth_first: bool = Field(False, description="Depth-first scheduling (-aic-enable-depth-first).")
    mos: int | None = Field(None, ge=1, le=64, description="Memory-optimization effort (-mos=N).")
    aic_hw_version: Literal["ai100", "ai200", "2.0"] = Field(
        "ai100", description='The card generation (-aic-hw-version): "ai100", "ai200", or "2.0" for older SDKs.')
    specializations_format: Literal["named", "flat"] = Field(
        "named", description='"named" ({name, symbols}, current SDKs) or "flat" (older SDKs).')
    compiler_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="More qaic-compile flags: key → -key-with-dashes (true: bare flag).")

    @field_validator("compiler_options")
    @classmethod
    def _flags(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, value in v.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
                raise ValueError(f"compiler option {key!r} is not a flag name: use lower case and _, e.g. "
                                 "allow_mxint8_mdp_io = true (passed as -allow-mxint8-mdp-io)")
            if key in MANAGED_FLAGS:
                raise ValueError(f"compiler option {key!r} is set by qeffbuild: {MANAGED_FLAGS[key]}")
            if isinstance(value, str) and (not value or any(c in value for c in "\n\r\0")):
                raise ValueError(f"compiler option {key!r} needs a one-line, non-empty value")
        return v


# --- the SDK ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sdk:
    compiler: Path
    root: Path
    versions: dict[str, str]  # "apps" / "platform" -> "1.20.2.0" (base_version, + build_id when present)

    def describe(self) -> str:
        found = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        return f"Cloud AI 100 SDK at {self.root} ({found}); compiler {self.compiler}"


def find_sdk() -> Sdk | str:
    """The SDK whose compiler qeffbuild runs, or why there is none.

    Read afresh each time (a few stat calls and two small XML files): an SDK upgraded under a
    long-lived process must change the keys of the QPCs it compiles.
    """
    env = os.environ.get("QAIC_COMPILER", "")
    compiler = Path(env) if env else DEFAULT_COMPILER
    if not compiler.is_file() or not os.access(compiler, os.X_OK):
        if env:
            return f"QAIC_COMPILER={env} is not an executable file; point it at the SDK's exec/qaic-compile"
        return (f"the Cloud AI 100 compiler ({DEFAULT_COMPILER}, from the Qualcomm Apps SDK) is not installed "
                "here; set QAIC_COMPILER to its path, or build the portable bundle with compile = [\"qaic-bundle\"] "
                "and run its compile.sh on an AI 100 host")
    root = compiler.resolve().parent.parent  # <sdk>/exec/qaic-compile
    versions: dict[str, str] = {}
    for kind in ("apps", "platform"):
        xml = root / "versions" / f"{kind}.xml"
        if xml.is_file():
            version = _xml_version(xml)
            if version is None:
                return f"{xml} names no base_version; qeffbuild keys QPCs by the SDK version and will not guess it"
            versions[kind] = version
    if "apps" not in versions:
        return (f"the SDK version file {root / 'versions' / 'apps.xml'} is missing; qeffbuild keys QPCs by the SDK "
                "version and will not guess it (QAIC_COMPILER must be <sdk>/exec/qaic-compile of an installed SDK)")
    return Sdk(compiler, root, versions)


def _xml_version(path: Path) -> str | None:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return None
    base = root.find(".//base_version")
    if base is None or not (base.text or "").strip():
        return None
    build = root.find(".//build_id")
    build_id = (build.text or "").strip() if build is not None else ""
    suffix = f"+{build_id}" if build_id else ""
    return (base.text or "").strip() + suffix


def runtime_missing() -> str | None:
    """Why a QPC cannot run here: the SDK's Python runtime (qaicrt) and a card are both needed."""
    import importlib.util

    lib = DEFAULT_SDK / "dev" / "lib" / platform.machine()
    if importlib.util.find_spec("qaicrt") is None and not any(lib.glob("qaicrt*")):
        return f"the SDK's Python runtime (qaicrt, in {lib}) is not installed"
    if not any(Path("/dev").glob("accel/accel*")) and not any(Path("/dev").glob("qaic_*")):
        return "no Cloud AI 100 card is visible (/dev/accel/accel*)"
    return None


# --- the backends -----------------------------------------------------------------------------


class QaicBundleBackend(Backend):
    name = "qaic-bundle"
    description = "Cloud AI 100 compile bundle: ONNX + specializations.json + custom_io.yaml + compile.sh"
    consumes = "onnx"
    devices = ("cpu", "cuda")  # the card is chosen on the AI 100 host; the specialization's device is not used
    refused_dtypes: ClassVar[dict[str, str]] = {
        "bfloat16": "the AI 100 compiler converts float32 to float16 (-convert-to-fp16); use float32 or float16",
        "int8": "the AI 100 compiler quantizes with its own options (mxfp6_matmul, mxint8 KV cache); use float16 "
                "with those in [specializations.X.qaic]",
    }
    toolchain: ClassVar[tuple[str, ...]] = ("onnx", "jinja2")
    version = 1
    compile = "qeffbuild.backends.qaic:build_bundle"
    session = ""
    options = QaicOptions
    options_key = "qaic"
    onnx_passes: ClassVar[tuple[str, ...]] = ("fp16-clip", "external-data")
    all_shapes_in_one = True
    symbolic_graphs = True
    templates: ClassVar[tuple[str, ...]] = ("qaic/specializations.json.j2", "qaic/custom_io.yaml.j2",
                                            "qaic/mdp_ts.json.j2", "qaic/command.j2", "qaic/compile.sh.j2")

    def plan(self, fail: Callable[[str, str], NoReturn], params: dict[str, Any],
             options: Any) -> dict[str, Any]:
        opts = options if options is not None else QaicOptions.model_validate({})
        facts = params.get("graph_facts") or {}
        if opts.mxint8_kv_cache and not facts.get("retained"):
            fail("mxint8_kv_cache", "this model keeps no KV cache on the card (no retained state), so there is "
                 "nothing to store in mxint8; remove mxint8_kv_cache")
        # The card, not the specialization's device, runs a QPC: the device stays out of the key.
        return {**{k: v for k, v in params.items() if k != "device"}, "options": opts.model_dump()}


class QaicBackend(QaicBundleBackend):
    name = "qaic"
    description = "Qualcomm Cloud AI 100 QPC (qaic-compile on the bundle)"
    toolchain = ()
    version = 1
    compile = "qeffbuild.backends.qaic:compile_qpc"
    session = "qeffbuild.backends.qaic:QaicSession"
    builds_on = "qaic-bundle"
    cluster_resource = "qaic"  # on Ray: only nodes started with --resources '{"qaic": 1}' compile and run QPCs
    onnx_passes = ()
    symbolic_graphs = False
    templates = ()
    runtimes = (Runtime("qaic", "Cloud AI 100 through the SDK's Python runtime (qaicrt)", "qaic",
                        numeric="accelerator"),)  # each family's tolerances for the card, as QEfficient's

    def unavailable(self, device: str) -> str | None:
        sdk = find_sdk()
        return sdk if isinstance(sdk, str) else super().unavailable(device)

    def tool_versions(self, device: str) -> dict[str, str]:
        sdk = find_sdk()
        return {} if isinstance(sdk, str) else {f"qaic-sdk-{k}": v for k, v in sdk.versions.items()}

    def runtime_unavailable(self, device: str) -> str | None:
        return self.unavailable(device) or runtime_missing()

    def environment(self) -> str | None:
        sdk = find_sdk()
        if isinstance(sdk, str):
            return f"Cloud AI 100 SDK: not found ({sdk})"
        runtime = runtime_missing()
        return sdk.describe() + (f"; runtime: {runtime}" if runtime else "; runtime: qaicrt and a card found")


# --- worker: the bundle -----------------------------------------------------------------------


def build_bundle(ctx: StepContext) -> None:
    """ONNX with named dims and retained-state names, and the files qaic-compile reads."""
    import onnx

    from ..templating import render_files

    p = ctx.params
    opts, facts = p["options"], p["graph_facts"]
    src = ctx.inputs["onnx"]
    model = onnx.load(str(src / "model.onnx"), load_external_data=False)
    static = name_axes(model, facts["axes"])
    renamed = rename_retained(model, facts["retained"])
    graphs = specializations(facts["graphs"], static, present_symbols(model))
    onnx.save_model(model, str(ctx.out / "model.onnx"))
    if (src / "model.onnx.data").exists():  # external weights are unchanged: the store keeps one copy
        shutil.copy2(src / "model.onnx.data", ctx.out / "model.onnx.data")
    custom_io = custom_io_entries(model, renamed, opts["mxint8_kv_cache"])

    def write(name: str, template: str, **values: Any) -> str:
        (ctx.out / name).write_text(render_files(ctx.files, template, **values))
        return name

    files = {"specializations": write("specializations.json", "qaic/specializations.json.j2", graphs=graphs,
                                      format=opts["specializations_format"]),
             "custom_io": write("custom_io.yaml", "qaic/custom_io.yaml.j2", custom_io=custom_io) if custom_io else "",
             "mdp": write(f"mdp_ts_{opts['num_devices']}.json", "qaic/mdp_ts.json.j2",
                          num_devices=opts["num_devices"], num_cores=opts["num_cores"])
             if opts["num_devices"] > 1 else ""}
    argv = [line.strip() for line in render_files(
        ctx.files, "qaic/command.j2", options=opts, onnx="model.onnx", retained_state=bool(renamed),
        extra=extra_flags(opts["compiler_options"]), binary_dir="qpc", **files).splitlines() if line.strip()]
    compile_sh = ctx.out / "compile.sh"
    compile_sh.write_text(render_files(ctx.files, "qaic/compile.sh.j2", argv=argv, default_compiler=DEFAULT_COMPILER,
                                       version=_version(), target=ctx.node_id.split(":")[2],
                                       graph=p.get("graph") or "every seq_len"))
    compile_sh.chmod(0o755)
    bundle = {"argv": argv, "graphs": graphs, "custom_io": custom_io, "renamed_outputs": renamed,
              "files": [f for f in files.values() if f], "options": opts}
    (ctx.out / "bundle.json").write_text(json.dumps(bundle, indent=1))
    print(f"qaic bundle: {len(graphs)} graph(s) {[g['name'] for g in graphs]}, {len(custom_io)} custom I/O, "
          f"{len(renamed)} retained state(s)")


def _version() -> str:
    from .. import __version__

    return __version__


def _rule(rules: dict[str, Any], name: str) -> Any:
    """The first rule whose pattern (fnmatch) matches ``name``."""
    return next((value for pattern, value in rules.items() if fnmatch.fnmatchcase(name, pattern)), None)


def name_axes(model: Any, axes: dict[str, list[str | None]]) -> dict[str, int]:
    """Give the graph's inputs and outputs the family's dimension names (``batch_size``, ``seq_len`` …).

    A symbolic dim is renamed everywhere it appears (an exporter's ``s43`` becomes ``batch_size``);
    a fixed one gets the name and keeps its size as that symbol's value, returned — one symbol
    with two sizes is a bug in the family's facts, refused here.
    """
    renames: dict[str, str] = {}
    static: dict[str, int] = {}
    for value in [*model.graph.input, *model.graph.output]:
        names = _rule(axes, value.name)
        if names is None:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(names) != len(dims):
            raise BuildError(f"{value.name} has rank {len(dims)}, the family names {len(names)} axes ({names})")
        for dim, symbol in zip(dims, names, strict=True):
            if symbol is None:
                continue
            if dim.HasField("dim_param"):
                renames[dim.dim_param] = symbol
            elif dim.HasField("dim_value"):
                if static.setdefault(symbol, dim.dim_value) != dim.dim_value:
                    raise BuildError(f"{value.name}: symbol {symbol} is {dim.dim_value} here and {static[symbol]} "
                                     "elsewhere; the graph's fixed sizes disagree with the family's axis names")
                dim.ClearField("dim_value")
                dim.dim_param = symbol
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]
    return static


def present_symbols(model: Any) -> set[str]:
    return {d.dim_param for v in [*model.graph.input, *model.graph.output] for d in v.type.tensor_type.shape.dim
            if d.HasField("dim_param")}


def rename_retained(model: Any, retained: dict[str, str]) -> dict[str, str]:
    """Outputs that carry state to the next call are named ``<input>_RetainedState`` (QEfficient's and the
    compiler's convention: with -retained-state such an output stays on the card as that input).

    ``retained`` maps an output pattern to its input, one ``*`` each: ``{"present_*": "past_*"}``.
    """
    inputs = {i.name for i in model.graph.input}
    renames: dict[str, str] = {}
    for out in model.graph.output:
        for pattern, template in retained.items():
            head, _, tail = pattern.partition("*")
            if not (out.name.startswith(head) and out.name.endswith(tail) and len(out.name) >= len(head + tail)):
                continue
            state = template.replace("*", out.name[len(head):len(out.name) - len(tail)])
            if state not in inputs:
                raise BuildError(f"retained output {out.name} names input {state}, which the graph does not have")
            renames[out.name] = state + RETAINED_SUFFIX
            break
    if renames:
        for node in model.graph.node:
            node.output[:] = [renames.get(n, n) for n in node.output]
            node.input[:] = [renames.get(n, n) for n in node.input]
        for out in model.graph.output:
            out.name = renames.get(out.name, out.name)
    return renames


def specializations(graphs: list[dict[str, Any]], static: dict[str, int], present: set[str]) -> list[dict[str, Any]]:
    """Each graph's symbols: the family's sizes, the fixed sizes found in the graph, only those it uses."""
    out = []
    for g in graphs:
        symbols = {**static, **g["symbols"]}
        for name, size in g["symbols"].items():
            if name in static and static[name] != size:
                raise BuildError(f"graph {g['name']}: {name} is {static[name]} in the ONNX but {size} in the "
                                 "specialization")
        out.append({"name": g["name"], "symbols": {k: str(v) for k, v in sorted(symbols.items()) if k in present}})
    return out


def custom_io_entries(model: Any, renamed: dict[str, str], mxint8: bool) -> dict[str, str]:
    """Float inputs cross to the card in float16; retained state is kept in float16 (or mxint8), each state
    input beside its ``_RetainedState`` output, in QEfficient's order."""
    from onnx import TensorProto

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16)
    state = {v[: -len(RETAINED_SUFFIX)]: v for v in renamed.values()}
    entries = {i.name: "float16" for i in model.graph.input
               if i.type.tensor_type.elem_type in floats and i.name not in state}
    for name, output in state.items():
        entries[name] = entries[output] = "mxint8" if mxint8 else "float16"
    return entries


def extra_flags(options: dict[str, Any]) -> list[str]:
    """compiler_options as flags, as QEfficient passes them: key → -key-with-dashes; true → bare flag."""
    flags = []
    for key, value in options.items():
        flag = "-" + key.replace("_", "-")
        if isinstance(value, bool):
            if value:
                flags.append(flag)
            continue
        flags.append(f"{flag}={value}")
    return flags


# --- worker: the QPC --------------------------------------------------------------------------

FILE_FLAGS = ("-m=", "-network-specialization-config=", "-custom-IO-list-file=", "-mdp-load-partition-config=")


def compile_qpc(ctx: StepContext) -> None:
    """Run qaic-compile on the bundle; the QPC lands in ``qpc/``, beside the bundle's small files."""
    sdk = find_sdk()
    if isinstance(sdk, str):
        raise BackendUnavailable(sdk)
    bundle = ctx.inputs["onnx"]
    info = json.loads((bundle / "bundle.json").read_text())
    qpc = ctx.out / "qpc"
    argv = [str(sdk.compiler)] + [_absolute(arg, bundle, qpc) for arg in info["argv"]]
    with tempfile.TemporaryDirectory(prefix="qaic-compile-") as scratch:  # the compiler's own temp files
        proc = subprocess.run(argv, cwd=scratch, capture_output=True, text=True)
    (ctx.out / "compile.log").write_text(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-3000:]
        raise BuildError(f"qaic-compile exited {proc.returncode}:\n{tail}\n(command and full output in compile.log)")
    if not (qpc / "programqpc.bin").is_file():
        raise BuildError(f"qaic-compile exited 0 but wrote no {qpc.name}/programqpc.bin; see compile.log")
    for name in [*BUNDLE_FILES, *info["files"]]:
        if (bundle / name).is_file() and not (ctx.out / name).exists():
            shutil.copy2(bundle / name, ctx.out / name)
    (ctx.out / "sdk.json").write_text(json.dumps({"compiler": str(sdk.compiler), **sdk.versions}, indent=1))
    print(f"qaic-compile ({', '.join(f'{k} {v}' for k, v in sdk.versions.items())}): QPC for "
          f"{[g['name'] for g in info['graphs']]}")


def _absolute(arg: str, bundle: Path, qpc: Path) -> str:
    if arg.startswith("-aic-binary-dir="):
        return f"-aic-binary-dir={qpc}"
    for flag in FILE_FLAGS:
        if arg.startswith(flag):
            return flag + str(bundle / arg[len(flag):])
    return arg


# --- the qaic runtime -------------------------------------------------------------------------


class QaicSession:
    """A QPC on a Cloud AI 100 card through ``qaicrt``, following QEfficient's QAICInferenceSession.

    Retained state stays on the card: the ``past_*`` feeds and ``*_RetainedState`` outputs are
    skipped, and each such output is returned as the feed it replaces, so the families' drivers
    (which feed the cache back every step) run unchanged. Not exercised in CI: no card there.
    """

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        import numpy as np

        from ..runtimes.io import read_io

        why = runtime_missing()
        if why:
            raise BackendUnavailable(f"cannot run the QPC in {folder}: {why}")
        sys.path.append(str(DEFAULT_SDK / "dev" / "lib" / platform.machine()))
        sys.path.append(str(DEFAULT_SDK / "dev" / "python"))
        import QAicApi_pb2 as aicapi
        import qaicrt

        self._rt, self._np = qaicrt, np
        self.io = read_io(folder)
        bundle = json.loads((folder / "bundle.json").read_text())
        self.renamed: dict[str, str] = bundle["renamed_outputs"]  # original output -> <input>_RetainedState
        self.state_inputs = {v[: -len(RETAINED_SUFFIX)] for v in self.renamed.values()}
        dtypes = {aicapi.FLOAT_TYPE: np.float32, aicapi.FLOAT_16_TYPE: np.float16, aicapi.INT64_I_TYPE: np.int64,
                  aicapi.INT32_I_TYPE: np.int32, aicapi.INT8_TYPE: np.int8}
        self.context = qaicrt.Context()
        self.queue = qaicrt.Queue(self.context, 0)
        qpc = qaicrt.Qpc(str(folder / "qpc"))
        iodesc = aicapi.IoDesc()
        status, data = qpc.getIoDescriptor()
        if status != qaicrt.QStatus.QS_SUCCESS:
            raise BuildError(f"qaicrt could not read the IO descriptor of {folder / 'qpc'}")
        iodesc.ParseFromString(bytes(data))
        self.bindings = list(iodesc.selected_set.bindings)
        self.index = {b.name: b.index for b in self.bindings}
        self.dtype = {b.name: dtypes.get(b.type, np.float32) for b in self.bindings}
        self.outputs = [b.name for b in self.bindings if b.dir == aicapi.BUFFER_IO_TYPE_OUTPUT]
        self.program = qaicrt.Program(self.context, None, qpc, qaicrt.QAicProgramProperties())
        if self.program.load() != qaicrt.QStatus.QS_SUCCESS:
            raise BuildError(f"qaicrt could not load the QPC in {folder / 'qpc'}")
        self.program.activate()
        self.exec = qaicrt.ExecObj(self.context, self.program)
        self.buffers = [qaicrt.QBuffer(bytes(b.size)) for b in self.bindings]
        self.dims = qaicrt.BufferDimensionsVecRef([(np.dtype(self.dtype[b.name]).itemsize, list(b.dims))
                                                  for b in self.bindings])

    def _set(self, name: str, value: Any) -> None:
        i = self.index[name]
        self.buffers[i] = self._rt.QBuffer(value.tobytes())
        self.dims[i] = (value.itemsize, value.shape if value.shape else (1,))

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        np, rt = self._np, self._rt
        for name, value in feeds.items():
            skip = name in self.state_inputs and name in self.index
            self._set(name, np.array([]) if skip else np.ascontiguousarray(value, self.dtype.get(name, value.dtype)))
        for name in self.renamed.values():
            self._set(name, np.array([]))
        if self.exec.setData(self.buffers, self.dims) != rt.QStatus.QS_SUCCESS:
            raise BuildError("qaicrt refused the inputs (setData)")
        if self.queue.enqueue(self.exec) != rt.QStatus.QS_SUCCESS or \
                self.exec.waitForCompletion() != rt.QStatus.QS_SUCCESS:
            raise BuildError("the QPC failed to run on the card; check the input shapes against specializations.json")
        status, out = self.exec.getData()
        if status != rt.QStatus.QS_SUCCESS:
            raise BuildError("qaicrt could not read the outputs (getData)")
        results = []
        for name in self.io["outputs"]:
            if name in self.renamed:  # on the card: hand the driver back what it fed
                results.append(feeds[self.renamed[name][: -len(RETAINED_SUFFIX)]])
                continue
            i = self.index[name]
            shape = tuple(self.dims[i][1])
            array = np.frombuffer(bytes(out[i]), self.dtype[name]).reshape(shape)
            results.append(array.astype(np.float32) if array.dtype.kind == "f" else array)
        return results
