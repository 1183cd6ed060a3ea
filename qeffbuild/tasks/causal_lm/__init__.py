"""The causal-LM family: decoder-only language models (Llama, Qwen2, Mistral, Phi-3, GPT-2 …) as QEfficient
builds them — a prefill graph per prompt length and a decode graph, over a retained KV cache.

Graph: load → transform (``prefill-<S>`` for each ``prefill_seq_len`` and ``decode``: the model's own forward
over the decoding core's retained cache of ``ctx_len`` slots, as torch.export programs) → export (ONNX) →
compile per backend → validate (greedy decoding on every runtime, token for token against the unmodified
model without a cache, and ``model.generate``).

A prompt is right-padded to the smallest prefill length that holds it; the prefill writes slots 0..S-1, the
logits of its last real token give the first new token, and each decode step writes the next slot. Padding
written beyond a prompt sits in slots the causal mask hides until a decode step overwrites them. Rows of one
batch share a prompt length (they share a position).

This module is torch-free: manifest fields, plan-time facts (positions, lengths) and expansion.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from ...checks import resolve_checks
from ...core.plugins import NumericClass, Task
from ...core.steps import MODEL_TOOLCHAIN, FileInput, StepNode
from ...core.tables import ModelBase, SpecializationBase, ValidationBase
from ...pipeline.nodes import (
    GraphFamily,
    check_backend,
    check_device,
    check_runtime,
    config_int,
    graph_compile_nodes,
    load_node,
    template_files,
)

if TYPE_CHECKING:
    from ...core.graph import Expansion
    from ...core.plugins import Plugins
    from ...core.workspace import TargetRef

ANY = "any"  # the graph of every length: prefill and decode in one program (a QPC's specializations)
TRANSFORM_VERSION = 2  # 2: the program holds only the weights its graph reads (torchutil.save_program)
VALIDATE_VERSION = 2  # 2: speed columns time decoding only (graphs opened and warmed first)
MIN_DECODE_STEPS = 32  # a cache that goes wrong after a few steps must not pass
HALF_AGREEMENT = 0.5  # float16/bfloat16 tokens drift from float32's; the share that must still agree
REPORT_TEMPLATES = ("report/report.html.j2",)
POSITION_LIMITS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")
MODEL_TYPES = ("llama", "qwen2", "mistral", "phi3", "gpt2", "gemma", "granite", "olmo", "starcoder2", "qwen3")
MAX_PROMPTS = 10_000


class CausalLMModel(ModelBase):
    task: Literal["causal-lm"] = Field(description="Text generation with a decoder-only language model.")


class CausalLMSpecialization(SpecializationBase):
    prefill_seq_len: list[int] = Field(description="Causal LM: one prefill graph per prompt length; a prompt uses "
                                                   "the smallest that holds it.",
                                       json_schema_extra={"example": "prefill_seq_len = [32, 128]"})
    ctx_len: int | None = Field(None, ge=2, le=131072, description="KV-cache slots: the prompt plus the new tokens "
                                                                   "(default: the model's positions, at most 512).")

    @field_validator("prefill_seq_len", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("prefill_seq_len")
    @classmethod
    def _lengths(cls, v: list[int]) -> list[int]:
        if not v or any(n < 1 or n > 131072 for n in v):
            raise ValueError("every prefill length must be between 1 and 131072 tokens")
        if len(set(v)) != len(v):
            raise ValueError("prefill lengths must be distinct")
        return sorted(v)


class CausalLMValidation(ValidationBase):
    inputs: str = Field(description="A text file of prompts, one a line (at least 3, of different lengths).")
    max_new_tokens: int = Field(MIN_DECODE_STEPS, ge=1, le=8192, description="Greedy steps compared token for token "
                                                                             "with the reference (≥ 32; EOS does not "
                                                                             "stop them).")


class CausalLMTask(GraphFamily, Task):
    name = "causal-lm"
    description = "text generation: prefill graphs + a retained-state decode graph, checked token for token"
    model_table = CausalLMModel
    specialization_table = CausalLMSpecialization
    validation_table = CausalLMValidation
    metrics: ClassVar[tuple[str, ...]] = ("token_agreement",)
    evidence: ClassVar[tuple[str, ...]] = ("tokens",)
    bench = "qeffbuild.tasks.causal_lm.bench:bench"
    run = "qeffbuild.tasks.causal_lm.run:run"
    run_render = "qeffbuild.tasks.causal_lm.run:render"
    report_html = "qeffbuild.tasks.causal_lm.report:render_html"
    example = 'a decoder-only LM, e.g. source = { random = "LlamaForCausalLM", config = { … } }'

    def supports(self, architecture: str | None, model_type: str | None) -> bool:
        return model_type in MODEL_TYPES or (architecture or "").endswith(("ForCausalLM", "LMHeadModel"))

    def supported(self) -> str:
        return f"decoder-only *ForCausalLM / *LMHeadModel classes (model_type {', '.join(MODEL_TYPES)} …)"

    def default_checks(self, numeric: NumericClass, dtype: str) -> dict[str, float]:
        if numeric == "reference":
            return {}
        return {"token_agreement": 1.0 if dtype == "float32" or numeric == "accelerator" else HALF_AGREEMENT}

    # --- facts ----------------------------------------------------------------------------------------
    def dims(self, x: Expansion, model: TargetRef, spec_ref: TargetRef) -> dict[str, Any]:
        s: CausalLMSpecialization = spec_ref.spec
        positions = config_int(x, model, POSITION_LIMITS)
        ctx = s.ctx_len or min(positions or 512, 512)
        if positions is not None and ctx > positions:
            x.fail(spec_ref, "ctx_len", f"ctx_len {ctx} exceeds the model's positions ({positions})")
        if max(s.prefill_seq_len) > ctx:
            x.fail(spec_ref, "prefill_seq_len", f"a prefill of {max(s.prefill_seq_len)} tokens does not fit ctx_len "
                   f"{ctx}; raise ctx_len or shorten the prefill")
        return {"batch_size": s.batch_size, "ctx_len": ctx, "prefill": list(s.prefill_seq_len)}

    @staticmethod
    def graphs(dims: dict[str, Any]) -> list[str]:
        return [*(f"prefill-{n}" for n in dims["prefill"]), "decode"]

    # --- graph ----------------------------------------------------------------------------------------
    def load(self, x: Expansion, model: TargetRef) -> str:
        return load_node(x, model, "AutoModelForCausalLM", "tokenizer")

    def transform_node(self, x: Expansion, model: TargetRef, spec_ref: TargetRef, graph: str, dims: dict[str, Any],
                       device: str) -> str:
        s: CausalLMSpecialization = spec_ref.spec
        params = {"graph": graph if graph in ("decode", ANY) else "prefill", "seq_len": self.seq_len(graph, dims),
                  "dtype": s.dtype,
                  "batch_size": dims["batch_size"], "ctx_len": dims["ctx_len"], "device": device}
        suffix = "" if device == s.device else f":{device}"
        return x.graph.add(StepNode(
            id=f"transform:{spec_ref.name}:{graph}{suffix}", kind="transform",
            runner="qeffbuild.tasks.causal_lm.transform:run", version=TRANSFORM_VERSION, toolchain=MODEL_TOOLCHAIN,
            params=params, deps={"model": self.load(x, model)}, target=spec_ref.name, out_subdir=f"transform-{graph}",
            salt=x.salt(model)))

    def compile_nodes(self, x: Expansion, model: TargetRef, spec_ref: TargetRef, backend: str) -> dict[str, str]:
        s: CausalLMSpecialization = spec_ref.spec
        check_backend(spec_ref, backend, s.device, x)
        dims = self.dims(x, model, spec_ref)

        def params(graph: str) -> dict[str, Any]:
            seq = self.seq_len(graph, dims)
            return {"graph": "" if graph == ANY else graph,  # "": every shape (the bundle's compile.sh says so)
                    "device": s.device, "dtype": s.dtype, "seq_len": seq,
                    "batch_size": dims["batch_size"], "ctx_len": dims["ctx_len"],
                    "graph_facts": self.graph_facts(graph, seq, dims)}

        def transform(graph: str, device: str) -> str:
            return self.transform_node(x, model, spec_ref, graph, dims, device)

        if x.ws.plugins.backends.get(backend).all_shapes_in_one:  # one QPC: prefill and decode in one graph
            nid = graph_compile_nodes(x, model, spec_ref, backend, [ANY], transform, params)[ANY]
            return dict.fromkeys(self.graphs(dims), nid)
        return graph_compile_nodes(x, model, spec_ref, backend, self.graphs(dims), transform, params)

    @staticmethod
    def seq_len(graph: str, dims: dict[str, Any]) -> int:
        """Tokens a graph reads: 1 for decode, the prefill's length, the longest prefill for ``ANY``."""
        if graph == "decode":
            return 1
        return max(dims["prefill"]) if graph == ANY else int(graph.removeprefix("prefill-"))

    @staticmethod
    def graph_facts(graph: str, seq: int, dims: dict[str, Any]) -> dict[str, Any]:
        """QEfficient's names: the ``Prefill`` and ``Decode`` specializations over ``batch_size``, ``seq_len`` and
        ``ctx_len``; the cache is retained state (``past_*`` → ``past_*_RetainedState``). ``ANY``: one graph
        for all of them (a QPC), a ``Prefill`` per prompt length (``Prefill_<n>`` when several) and ``Decode``."""
        cache = ["batch_size", None, "ctx_len", None]
        lengths = dims["prefill"]
        if graph == ANY:
            shapes = [("Prefill" if len(lengths) == 1 else f"Prefill_{n}", n) for n in lengths] + [("Decode", 1)]
        else:
            shapes = [("Decode" if graph == "decode" else "Prefill", seq)]
        return {"graphs": [{"name": name, "symbols": {"batch_size": dims["batch_size"], "seq_len": n,
                                                      "ctx_len": dims["ctx_len"]}} for name, n in shapes],
                "retained": {"present_*": "past_*"},
                "axes": {"input_ids": ["batch_size", "seq_len"], "past_*": cache, "present_*": cache,
                         "logits": ["batch_size", "seq_len", None]}}

    def validate_node(self, x: Expansion, model: TargetRef, ref: TargetRef) -> str:
        v: CausalLMValidation = ref.spec
        if v.max_new_tokens < MIN_DECODE_STEPS:
            x.fail(ref, "max_new_tokens", f"causal-LM validations compare at least {MIN_DECODE_STEPS} decode steps (a "
                   f"cache that is wrong after a few steps must not pass); got {v.max_new_tokens}")
        prompts = _prompts(x, ref, ref.file.root / v.inputs)
        deps: dict[str, str] = {"model": self.load(x, model)}
        specs: list[dict[str, Any]] = []
        toolchain = {*MODEL_TOOLCHAIN, "numpy", "matplotlib", "jinja2"}
        runtimes = {r: x.ws.plugins.runtimes.get(r) for r in v.runtimes}
        for name in v.specializations:
            sref = x.ws.targets[name]
            s: CausalLMSpecialization = sref.spec
            check_device(sref, s.device)
            dims = self.dims(x, model, sref)
            if dims["ctx_len"] < max(dims["prefill"]) + v.max_new_tokens - 1:
                x.fail(sref, "ctx_len", f"ctx_len {dims['ctx_len']} cannot hold a {max(dims['prefill'])}-token prefill "
                       f"and the {v.max_new_tokens} new tokens of validation {ref.name!r}; make it at least "
                       f"{max(dims['prefill']) + v.max_new_tokens - 1}")
            specs.append({"name": name, "dtype": s.dtype, "device": s.device, **dims})
            for runtime in runtimes.values():
                if runtime.opens == "program":
                    for graph in self.graphs(dims):
                        deps[f"program/{name}/{graph}"] = self.transform_node(x, model, sref, graph, dims, s.device)
                elif runtime.opens != "reference":
                    check_runtime(x, sref, runtime.name, s.device)
                    toolchain.update(x.ws.plugins.backends.get(runtime.opens).toolchain)
                    for graph, nid in self.compile_nodes(x, model, sref, runtime.opens).items():
                        deps[f"{runtime.opens}/{name}/{graph}"] = nid
        return x.graph.add(StepNode(
            id=f"validate:{ref.name}", kind="validate", runner="qeffbuild.tasks.causal_lm.validate:run",
            exclusive=True, version=VALIDATE_VERSION, toolchain=tuple(sorted(toolchain)),
            params={"runtimes": {r: rt.opens for r, rt in runtimes.items()}, "specializations": specs,
                    "prompts": prompts, "max_new_tokens": v.max_new_tokens,
                    "checks": resolve_checks(self, v, [s["dtype"] for s in specs], [s["name"] for s in specs]),
                    "random_weights": x.ws.random_weights(ref.name)},
            deps=deps, files=(FileInput(v.inputs, ref.file.root / v.inputs), *template_files(ref, REPORT_TEMPLATES)),
            target=ref.name, out_subdir="", salt=x.salt(ref)))


def _prompts(x: Expansion, ref: TargetRef, path: Path) -> list[str]:
    """The prompts, one a line (blank lines skipped): at least three, of which two differ in length."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        x.fail(ref, "inputs", f"cannot read {ref.spec.inputs!r} ({e}); name a UTF-8 text file of prompts, one a line")
    prompts = [line.strip() for line in text.splitlines() if line.strip()][:MAX_PROMPTS]
    if len(prompts) < 3 or len({len(p) for p in prompts}) < 2:
        x.fail(ref, "inputs", f"{ref.spec.inputs!r} gives {len(prompts)} prompt(s); a causal-LM validation needs at "
               "least 3, of different lengths (a cache is checked on more than one shape)")
    return prompts


def register(plugins: Plugins) -> None:
    plugins.tasks.add(CausalLMTask.name, CausalLMTask())
