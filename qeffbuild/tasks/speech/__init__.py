"""The speech seq2seq family: Whisper, Speech2Text and SpeechEncoderDecoder models (Wav2Vec2 or Hubert
encoders with BERT, RoBERTa, GPT-2 or BART decoders), through one retained-state rewrite.

Graph: load → encoder-side transform (per audio bucket: the model's encoder plus each layer's
cross-attention keys/values, computed once) and decoder-step transform (the model's own
decoder over an explicit KV cache of fixed ``ctx_len``) → export (ONNX) → compile per backend →
validate (greedy decoding on every runtime, token for token against the unmodified model).

This module is torch-free: manifest fields, plan-time facts (encoder lengths, decoder
positions, prompt length, languages — from configs and tokenizer files) and expansion. Step
ids name roles (``transform:<spec>:decoder``); keys carry the shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from ...checks import resolve_checks
from ...core.plugins import NumericClass, Task
from ...core.steps import MODEL_TOOLCHAIN, StepNode
from ...core.tables import ModelBase, RandomSource, SpecializationBase
from ...pipeline.audio import SAMPLE_RATE
from ...pipeline.datasets import AUDIO_SUFFIXES, AudioValidation, DataError, select
from ...pipeline.nodes import (
    GraphFamily,
    check_backend,
    check_device,
    check_runtime,
    check_support,
    graph_compile_nodes,
    load_node,
    model_config,
    template_files,
)
from ...pipeline.normalize import default_normalizer
from .families import (
    ARCHITECTURES,
    Architecture,
    FactError,
    architecture_of,
    compose_encoder_decoder,
    feature_bins,
    whisper_prompt,
)

if TYPE_CHECKING:
    from ...core.graph import Expansion
    from ...core.plugins import Plugins
    from ...core.workspace import TargetRef

TRANSFORM_VERSION = 5  # 4: one fused q/k/v projection per self-attention (decoding/fuse.py); 5: only the
# weights the graph reads (torchutil.save_program: the encoder side carried the whole decoder)
VALIDATE_VERSION = 6  # 5: a runtime row that drifts says how far apart the reference put the two tokens;
# 6: the long-form reference row times its own decode (it timed a cache lookup)
LOAD_BUILDER = "qeffbuild.tasks.speech.load:build"
LOAD_BUILDER_VERSION = 2  # bump when what the builder writes changes (2: a random Whisper's prev_sot_token_id)
HALF_WER_MARGIN = 0.02  # absolute: 2 WER points over the float32 reference's (on the validation's data)
# On random weights the ΔWER default scores noise (a random model's transcripts are garbage either way, and one
# flipped near tie rewrites the rest of a greedy decode). There a reduced-precision row is held instead to where it
# first differs: the float32 reference's own logits must put the two tokens at most this far apart (a rounding of
# the dtype flips a near tie; a wrong kernel picks a token the reference ranks far below). Measured flips: float16
# on a GPU 3e-5 to 8e-3, bfloat16 on the CPU 0.03 to 0.05.
RANDOM_WEIGHT_TIE_GAP = {"float16": 0.05, "bfloat16": 0.25, "int8": 0.5}
LONGFORM_WER_MARGIN = 0.01  # a float32 runtime's WER over long inputs, against the reference's long-form
MIN_DECODE_STEPS = 20  # a cache wrong after step 1 must not pass: check many steps
REPORT_TEMPLATES = ("report/report.html.j2",)
__all__ = ["AUDIO_SUFFIXES", "SpeechTask"]


class SpeechModel(ModelBase):
    task: Literal["speech-seq2seq"] = Field(description="Speech recognition with an encoder-decoder model.")
    decoder_start_token_id: int | None = Field(None, ge=0, description="First decoder token (encoder-decoders).")
    pad_token_id: int | None = Field(None, ge=0)
    eos_token_id: int | None = Field(None, ge=0, description="End of text: stops transcription.")


class SpeechSpecialization(SpecializationBase):
    ctx_len: int | None = Field(None, ge=1, le=65536, description="Decoder KV-cache length (retained state).")
    encoder_ctx_len: int | None = Field(None, ge=1, le=65536,
                                        description="Whisper: encoder positions (= max_source_positions).")
    audio_len_s: list[float] = Field(default_factory=list, description="Speech2Text and encoder-decoder models: "
                                     "audio lengths in seconds, one encoder graph each; an input uses the smallest "
                                     "that fits.", json_schema_extra={"example": "audio_len_s = [2, 5]"})

    @field_validator("audio_len_s", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("audio_len_s")
    @classmethod
    def _buckets(cls, v: list[float]) -> list[float]:
        if any(s <= 0 or s > 3600 for s in v):
            raise ValueError("every audio length must be > 0 and at most 3600 seconds")
        if len({round(s * SAMPLE_RATE) for s in v}) != len(v):
            raise ValueError("audio lengths must be distinct")
        return sorted(v)


class SpeechValidation(AudioValidation):
    max_new_tokens: int = Field(24, ge=1, le=4096, description="Greedy steps compared token for token with the "
                                                               "reference on the exact subset (≥ 20; EOS does not "
                                                               "stop them).")
    exact_subset: int = Field(8, ge=1, le=100000, description="How many utterances (the first selected, plus one per "
                                                               "compiled audio length) the reference decodes for the "
                                                               "token-for-token check; WER covers every utterance.")
    generation_max_length: int | None = Field(None, ge=1, le=4096, description="Evaluation: new tokens per utterance "
                                                                              "at most, each row stopping at its EOS "
                                                                              "(default: max_new_tokens).")
    language: str | None = Field(None, description="Multilingual Whisper: the language token (default 'en').")
    task: Literal["transcribe", "translate"] | None = Field(None, description="Multilingual Whisper: the task token "
                                                                             "(default transcribe).")
    condition_on_previous_text: bool = Field(False, description="Long-form Whisper: each window's prompt holds the "
                                                                "text before it (as HF's condition_on_prev_tokens).")
    longform_max_new_tokens: int | None = Field(None, ge=1, le=4096, description="Long-form: tokens per window at "
                                                "most (default: Whisper's max_target_positions // 2 less the prompt; "
                                                "chunked families: what ctx_len holds).")
    chunk_stride_s: float | None = Field(None, gt=0, le=600, description="Speech2Text and encoder-decoders: seconds "
                                         "of overlap between consecutive chunks of long audio (default: a sixth of "
                                         "the longest audio_len_s).")


def bucket_name(seconds: float) -> str:
    return f"encoder-{seconds:g}s"


class SpeechTask(GraphFamily, Task):
    name = "speech-seq2seq"
    description = "speech recognition: encoder + retained-state decoder step, checked token for token"
    model_table = SpeechModel
    specialization_table = SpeechSpecialization
    validation_table = SpeechValidation
    metrics: ClassVar[tuple[str, ...]] = ("token_agreement", "wer", "cer", "wer_delta")
    evidence: ClassVar[tuple[str, ...]] = ("tokens", "text", "divergence")
    libraries = ("soundfile", "soxr", "jiwer")
    bench = "qeffbuild.tasks.speech.bench:bench"
    run = "qeffbuild.tasks.speech.transcriber:run"
    transcriber = "qeffbuild.tasks.speech.transcriber:Transcriber"
    run_render = "qeffbuild.tasks.speech.formats:render"
    run_formats = ("text", "json", "srt", "vtt")
    report_html = "qeffbuild.tasks.speech.report:render_html"

    compose = staticmethod(compose_encoder_decoder)

    def supports(self, architecture: str | None, model_type: str | None) -> bool:
        return architecture_of(architecture, model_type) is not None

    def supported(self) -> str:
        return ("WhisperForConditionalGeneration, Speech2TextForConditionalGeneration and SpeechEncoderDecoderModel "
                "(model_type " + ", ".join(t for a in ARCHITECTURES.values() for t in a.model_types) + ")")

    def default_checks(self, numeric: NumericClass, dtype: str) -> dict[str, float]:
        # float32 tokens must equal the reference's on the exact subset. Half precision cannot (its tokens
        # drift); its WER must stay within HALF_WER_MARGIN of float32's on the same data. On Cloud AI 100,
        # QEfficient's bar: exact tokens.
        if numeric == "reference":
            return {}
        if numeric == "accelerator" or dtype == "float32":
            return {"token_agreement": 1.0}
        return {"wer_delta": HALF_WER_MARGIN}

    def check(self, checker: Any, ref: TargetRef) -> None:
        # A validation's inputs are resolved when it is planned (dataset.select), not at load: data that
        # is generated (scripts/make_eval_set.py) or absent blocks that validation only, not the project.
        return None

    # --- facts ---------------------------------------------------------------------------------
    def arch(self, x: Expansion, model: TargetRef) -> Architecture:
        src = x.ws.source(model)
        found = architecture_of(src.architecture, src.model_type)
        if found is None:  # a validation can be expanded before its model is checked: the same located error
            check_support(x, model)
        assert found is not None  # check_support raised otherwise
        return found

    def config(self, x: Expansion, model: TargetRef) -> dict[str, Any]:
        cfg = model_config(x, model)
        m: SpeechModel = model.spec
        for name in ("decoder_start_token_id", "pad_token_id", "eos_token_id"):
            if getattr(m, name) is not None:
                cfg[name] = getattr(m, name)
        return cfg

    def _fact(self, x: Expansion, ref: TargetRef, key: str, fn: Any) -> Any:
        try:
            return fn()
        except FactError as e:
            x.fail(ref, key, str(e))

    def dims(self, x: Expansion, model: TargetRef, spec_ref: TargetRef) -> dict[str, Any]:
        """batch, ctx_len, the encoder graphs (one per bucket) and the decoder's cross-attention length."""
        s: SpeechSpecialization = spec_ref.spec
        arch, cfg = self.arch(x, model), self.config(x, model)
        max_tgt = self._fact(x, model, "source", lambda: arch.decoder_positions(cfg))
        ctx = s.ctx_len or min(max_tgt, 448)
        if ctx > max_tgt:
            x.fail(spec_ref, "ctx_len", f"ctx_len {ctx} exceeds the model's decoder positions ({max_tgt})")
        if not arch.bucketed:
            if s.audio_len_s:
                x.fail(spec_ref, "audio_len_s", "Whisper reads one fixed window (its max_source_positions); "
                       "audio_len_s applies to Speech2Text and encoder-decoder models")
            enc = self._fact(x, model, "source", lambda: arch.encoder_length(cfg, 0))
            self._check_mel_bins(x, model, cfg)
            if s.encoder_ctx_len not in (None, enc):
                x.fail(spec_ref, "encoder_ctx_len", f"encoder_ctx_len must equal the model's max_source_positions "
                       f"({enc}): the unmodified reference encoder accepts only that length")
            samples = self._fact(x, model, "source", lambda: arch.window_samples(cfg))
            graphs = {"encoder": {"samples": samples, "encoder_len": enc, "seconds": samples / SAMPLE_RATE}}
            return {"batch_size": s.batch_size, "ctx_len": ctx, "encoder_len": enc, "graphs": graphs}
        if s.encoder_ctx_len is not None:
            x.fail(spec_ref, "encoder_ctx_len", "encoder_ctx_len applies to Whisper; list audio_len_s instead")
        if not s.audio_len_s:
            x.fail(spec_ref, "audio_len_s", f"a {arch.name} specialization lists the audio lengths it compiles for, "
                   "e.g. audio_len_s = [2, 5] (seconds)")
        graphs = {}
        for seconds in s.audio_len_s:
            samples = round(seconds * SAMPLE_RATE)
            enc = self._fact(x, spec_ref, "audio_len_s", lambda n=samples: arch.encoder_length(cfg, n))
            graphs[bucket_name(seconds)] = {"samples": samples, "encoder_len": enc, "seconds": seconds}
        longest = max(g["encoder_len"] for g in graphs.values())
        limit = arch.max_encoder_positions(cfg)
        if limit is not None and longest > limit:
            x.fail(spec_ref, "audio_len_s", f"{max(s.audio_len_s):g} s gives {longest} encoder positions, more than "
                   f"the model's max_source_positions ({limit})")
        return {"batch_size": s.batch_size, "ctx_len": ctx, "encoder_len": longest, "graphs": graphs}

    @staticmethod
    def _check_mel_bins(x: Expansion, model: TargetRef, cfg: dict[str, Any]) -> None:
        """A saved Whisper's feature extractor must make the mel bins its encoder reads (a random model's is made
        to match when it is built)."""
        folder = x.ws.source(model).folder
        found = feature_bins(folder) if folder is not None else None
        wanted = cfg.get("num_mel_bins", 80)
        if found is not None and isinstance(wanted, int) and found[0] != wanted:
            x.fail(model, "source", f"the model reads {wanted} mel bins (config.json num_mel_bins) but its feature "
                   f"extractor makes {found[0]} ({found[1]} feature_size): save the checkpoint's own processor "
                   "beside it, or fix one of the two")

    def prompt_length(self, x: Expansion, model: TargetRef, language: str | None, at: TargetRef,
                      task: str | None = None) -> int:
        arch = self.arch(x, model)
        if not arch.whisper_tokens:
            if language is not None:
                x.fail(at, "language", f"language applies to multilingual Whisper models, not {arch.name}")
            if task is not None:
                x.fail(at, "task", f"task applies to Whisper models, not {arch.name}")
            cfg = self.config(x, model)
            if cfg.get("decoder_start_token_id") is None and arch.composed:
                x.fail(model, "decoder_start_token_id", "an encoder-decoder model needs decoder_start_token_id "
                       "(and eos_token_id): set them here, e.g. from the decoder tokenizer's [CLS] and [SEP] ids")
            return 1
        src = x.ws.source(model)
        tok = src.paths.get("tokenizer")
        facts = whisper_prompt(src.folder, tok, language)
        if language is not None and facts.languages is not None:
            if not facts.languages and language != "en":
                x.fail(at, "language", f"the model is English-only: it has no language tokens, so {language!r} "
                       "cannot be asked for; remove language or set it to 'en'")
            if facts.languages and language not in facts.languages:
                from ...core.crossref import hint

                x.fail(at, "language", f"language {language!r} is not one of the model's languages"
                       f"{hint(language, list(facts.languages))} ({', '.join(facts.languages[:20])} …)")
        if task == "translate" and facts.tasks is not None and "translate" not in facts.tasks:
            x.fail(at, "task", "the model has no <|translate|> token (English-only Whisper models only transcribe); "
                   "remove task or set it to 'transcribe'")
        return facts.length

    def longform(self, x: Expansion, model: TargetRef, ref: TargetRef, prompt: int) -> dict[str, Any]:
        """A validation's long-form settings (part of its key): tokens per window, conditioning, chunk overlap."""
        v: SpeechValidation = ref.spec
        arch = self.arch(x, model)
        if arch.whisper_tokens:
            if v.chunk_stride_s is not None:
                x.fail(ref, "chunk_stride_s", "Whisper decodes long audio sequentially with timestamps; chunk_stride_s "
                       "applies to Speech2Text and encoder-decoder models")
            positions = self._fact(x, model, "source", lambda: arch.decoder_positions(self.config(x, model)))
            per_window = v.longform_max_new_tokens or positions // 2 - (prompt - 1)  # the prompt less <|notimestamps|>
            return {"max_new_tokens": per_window, "condition_on_previous_text": v.condition_on_previous_text,
                    "chunk_stride_s": None, "cut_off": positions // 2 - 1}
        if v.condition_on_previous_text:
            x.fail(ref, "condition_on_previous_text", f"{arch.name} predicts no timestamps: long audio is decoded in "
                   "overlapping chunks, each on its own")
        return {"max_new_tokens": v.longform_max_new_tokens, "condition_on_previous_text": False,
                "chunk_stride_s": v.chunk_stride_s, "cut_off": 0}

    @staticmethod
    def _check_longform_ctx(x: Expansion, ref: TargetRef, sref: TargetRef, dims: dict[str, Any],
                            longform: dict[str, Any], prompt: int) -> None:
        """Whisper's windows must fit the decoder's cache: the prompt (and the previous text) plus their tokens."""
        if longform["chunk_stride_s"] is not None or longform["cut_off"] == 0:
            return
        lead = prompt - 1 + (longform["cut_off"] + 1 if longform["condition_on_previous_text"] else 0)
        need = lead + longform["max_new_tokens"] - 1
        if dims["ctx_len"] < need:
            x.fail(sref, "ctx_len", f"validation {ref.name!r} has audio longer than the model's window, decoded "
                   f"long-form: each window's prompt ({lead} tokens"
                   f"{', with the previous text' if longform['condition_on_previous_text'] else ''}) and its "
                   f"{longform['max_new_tokens']} new tokens (longform_max_new_tokens) need ctx_len ≥ {need}, not "
                   f"{dims['ctx_len']}")

    # --- graph ---------------------------------------------------------------------------------
    @staticmethod
    def graphs(dims: dict[str, Any]) -> list[str]:
        return [*dims["graphs"], "decoder"]

    def load(self, x: Expansion, model: TargetRef) -> str:
        m: SpeechModel = model.spec
        if isinstance(m.source, RandomSource) and m.source.random == "SpeechEncoderDecoderModel":
            for side in ("encoder", "decoder"):
                if not isinstance(m.source.config.get(side), dict) or "model_type" not in m.source.config[side]:
                    x.fail(model, "source.config", f"a random SpeechEncoderDecoderModel needs config.{side} = "
                           "{ model_type = \"…\", … }")
        tokens = {k: getattr(m, k) for k in ("decoder_start_token_id", "pad_token_id", "eos_token_id")
                  if getattr(m, k) is not None}
        return load_node(x, model, "AutoModelForSpeechSeq2Seq", "processor",
                         {"builder": LOAD_BUILDER, "builder_version": LOAD_BUILDER_VERSION, "token_ids": tokens})

    def transform_node(self, x: Expansion, model: TargetRef, spec_ref: TargetRef, which: str,
                       dims: dict[str, Any], device: str) -> str:
        s: SpeechSpecialization = spec_ref.spec
        params: dict[str, Any] = {"graph": "decoder" if which == "decoder" else "encoder", "dtype": s.dtype,
                                  "batch_size": dims["batch_size"], "encoder_len": dims["encoder_len"],
                                  "device": device, "arch": self.arch(x, model).name}
        if which == "decoder":  # only the decoder depends on ctx_len: changing it leaves the encoders cached
            params["ctx_len"] = dims["ctx_len"]
        else:
            params["samples"] = dims["graphs"][which]["samples"]
            params["bucket_encoder_len"] = dims["graphs"][which]["encoder_len"]
        suffix = "" if device == s.device else f":{device}"
        return x.graph.add(StepNode(
            id=f"transform:{spec_ref.name}:{which}{suffix}", kind="transform",
            runner="qeffbuild.tasks.speech.transform:run", version=TRANSFORM_VERSION, toolchain=MODEL_TOOLCHAIN,
            params=params, deps={"model": self.load(x, model)}, target=spec_ref.name,
            out_subdir=f"transform-{which}", salt=x.salt(model)))

    def compile_nodes(self, x: Expansion, model: TargetRef, spec_ref: TargetRef, backend: str) -> dict[str, str]:
        s: SpeechSpecialization = spec_ref.spec
        check_backend(spec_ref, backend, s.device, x)
        dims = self.dims(x, model, spec_ref)
        arch = self.arch(x, model)

        def params(which: str) -> dict[str, Any]:
            shape = {"batch_size": dims["batch_size"], "encoder_len": dims["encoder_len"]}
            if which == "decoder":
                shape["ctx_len"] = dims["ctx_len"]
            else:
                shape["samples"] = dims["graphs"][which]["samples"]
            return {"graph": which, "device": s.device, "dtype": s.dtype, **shape,
                    "graph_facts": self.graph_facts(arch, which, dims)}

        return graph_compile_nodes(x, model, spec_ref, backend, self.graphs(dims),
                                   lambda g, device: self.transform_node(x, model, spec_ref, g, dims, device), params)

    @staticmethod
    def graph_facts(arch: Architecture, which: str, dims: dict[str, Any]) -> dict[str, Any]:
        """Graph names, symbols and axis names as QEfficient names Whisper's (``Encoder`` and ``Decode``;
        ``encoder_ctx_len``, ``decoder_ctx_len``, ``feature_len``); the decoder's cache is retained state."""
        cross = {"cross_*": ["batch_size", None, "encoder_ctx_len", None],
                 "encoder_attention_mask": ["batch_size", "encoder_ctx_len"]}
        symbols = {"batch_size": dims["batch_size"], "encoder_ctx_len": dims["encoder_len"]}
        if which != "decoder":
            features = list(arch.feature_axes)
            return {"graphs": [{"name": "Encoder", "symbols": symbols}], "retained": {},
                    "axes": {"input_features": features, "input_values": features,
                             "attention_mask": ["batch_size", "feature_len"], **cross}}
        cache = ["batch_size", None, "decoder_ctx_len", None]
        decode = {**symbols, "seq_len": 1, "decoder_ctx_len": dims["ctx_len"]}
        return {"graphs": [{"name": "Decode", "symbols": decode}],
                "retained": {"present_*": "past_*"},
                "axes": {"input_ids": ["batch_size", "seq_len"], "past_*": cache, "present_*": cache,
                         "logits": ["batch_size", "seq_len", None], **cross}}

    def validate_node(self, x: Expansion, model: TargetRef, ref: TargetRef) -> str:
        v: SpeechValidation = ref.spec
        if v.max_new_tokens < MIN_DECODE_STEPS:
            x.fail(ref, "max_new_tokens", f"speech validations compare at least {MIN_DECODE_STEPS} decode steps "
                   f"(a cache that is wrong after the first step must not pass); got {v.max_new_tokens}")
        try:
            sel = select(v, ref.file.root)
        except DataError as e:
            x.fail(ref, e.key, str(e))
        if sel.kind != "hf" and len(sel.rows) < 2:
            x.fail(ref, "inputs", f"{v.inputs!r} gives {len(sel.rows)} utterance(s); a speech validation needs at "
                   "least two")
        durations = {r["name"]: r["seconds"] for r in sel.rows}
        prompt = self.prompt_length(x, model, v.language, ref, v.task)
        longform = self.longform(x, model, ref, prompt)
        long_rows = False
        length = max(v.max_new_tokens, v.generation_max_length or 0)
        deps: dict[str, str] = {"model": self.load(x, model)}
        specs: list[dict[str, Any]] = []
        toolchain = {*MODEL_TOOLCHAIN, "numpy", "soundfile", "soxr", "jiwer", "matplotlib", "jinja2"}
        if sel.kind == "hf":
            toolchain.add("datasets")
        runtimes = {r: x.ws.plugins.runtimes.get(r) for r in v.runtimes}
        for name in v.specializations:
            sref = x.ws.targets[name]
            s: SpeechSpecialization = sref.spec
            check_device(sref, s.device)
            dims = self.dims(x, model, sref)
            if dims["ctx_len"] < length + prompt - 1:
                x.fail(sref, "ctx_len", f"ctx_len {dims['ctx_len']} cannot hold the prompt ({prompt} token"
                       f"{'s' if prompt != 1 else ''}) plus the {length} new tokens of validation {ref.name!r} "
                       f"(max_new_tokens, generation_max_length); make it at least {length + prompt - 1}")
            if durations:
                _check_buckets(x, ref, sref, dims, durations)
                if max(durations.values()) > max(g["seconds"] for g in dims["graphs"].values()) + 1e-9:
                    long_rows = True
                    self._check_longform_ctx(x, ref, sref, dims, longform, prompt)
            specs.append({"name": name, "dtype": s.dtype, "device": s.device, "batch_size": dims["batch_size"],
                          "ctx_len": dims["ctx_len"], "encoder_len": dims["encoder_len"],
                          "graphs": {g: d["samples"] for g, d in dims["graphs"].items()}})
            for runtime in runtimes.values():
                if runtime.opens == "program":
                    for which in self.graphs(dims):
                        deps[f"program/{name}/{which}"] = self.transform_node(x, model, sref, which, dims, s.device)
                elif runtime.opens != "reference":
                    check_runtime(x, sref, runtime.name, s.device)
                    toolchain.update(x.ws.plugins.backends.get(runtime.opens).toolchain)
                    for which, nid in self.compile_nodes(x, model, sref, runtime.opens).items():
                        deps[f"{runtime.opens}/{name}/{which}"] = nid
        checks = resolve_checks(self, v, [s["dtype"] for s in specs], [s["name"] for s in specs])
        if x.ws.random_weights(ref.name):
            checks = _random_weight_checks(v, specs, checks)
        if long_rows and sel.has_text is not False:  # long-form: WER within a point of the reference's long-form
            for name_of, per_spec in checks.items():
                own = v.checks.get(name_of, {})
                for entry in specs:
                    if name_of != "pytorch" and entry["dtype"] == "float32" and "wer_delta" not in own:
                        per_spec[entry["name"]]["wer_delta"] = LONGFORM_WER_MARGIN
        checks = _text_checks(x, ref, checks, sel.has_text)
        return x.graph.add(StepNode(
            id=f"validate:{ref.name}", kind="validate", runner="qeffbuild.tasks.speech.validate:run",
            exclusive=True, version=VALIDATE_VERSION, toolchain=tuple(sorted(toolchain)),
            params={"runtimes": {r: rt.opens for r, rt in runtimes.items()}, "specializations": specs,
                    "max_new_tokens": v.max_new_tokens, "generation_max_length": v.generation_max_length or
                    v.max_new_tokens, "exact_subset": v.exact_subset, "language": v.language, "task": v.task,
                    "normalizer": v.normalizer or default_normalizer(v.language), "arch": self.arch(x, model).name,
                    "inputs": {**sel.params, "rows": sel.rows, "source": v.inputs}, "checks": checks,
                    "longform": longform,
                    "random_weights": x.ws.random_weights(ref.name)},
            deps=deps, files=sel.files + template_files(ref, REPORT_TEMPLATES), target=ref.name, out_subdir="",
            salt=x.salt(ref), paths=sel.paths))


def _random_weight_checks(v: SpeechValidation, specs: list[dict[str, Any]],
                          checks: dict[str, Any]) -> dict[str, Any]:
    """The half-precision ΔWER default, on random weights, becomes a bound on ``divergence_gap``
    (:data:`RANDOM_WEIGHT_TIE_GAP`); a bound the manifest sets is kept as it is."""
    dtypes = {s["name"]: s["dtype"] for s in specs}
    out: dict[str, Any] = {}
    for runtime, per_spec in checks.items():
        own = v.checks.get(runtime, {})
        out[runtime] = {}
        for name, bounds in per_spec.items():
            bounds = dict(bounds)
            gap = RANDOM_WEIGHT_TIE_GAP.get(dtypes.get(name, ""))
            if gap is not None and "wer_delta" in bounds and "wer_delta" not in own:
                del bounds["wer_delta"]
                bounds.setdefault("divergence_gap", gap)
            out[runtime][name] = bounds
    return out


def _text_checks(x: Expansion, ref: TargetRef, checks: dict[str, Any], has_text: bool | None) -> dict[str, Any]:
    """WER, CER and ΔWER need transcripts: bounds the manifest sets on them are refused without any; the
    half-precision default (ΔWER) is dropped, and the report says the agreement was not bounded."""
    if has_text is not False:
        return checks
    v: SpeechValidation = ref.spec
    for runtime, bounds in v.checks.items():
        for metric in ("wer", "cer", "wer_delta"):
            if metric in bounds:
                x.fail(ref, f"checks.{runtime}.{metric}", f"{metric} needs transcripts, and the inputs of "
                       f"{ref.name!r} have none; add them (a .txt beside each file, or a text column) or drop "
                       "the bound")
    return {r: {s: {m: b for m, b in bounds.items() if m not in ("wer", "cer", "wer_delta")}
                for s, bounds in per_spec.items()} for r, per_spec in checks.items()}


def _check_buckets(x: Expansion, ref: TargetRef, sref: TargetRef, dims: dict[str, Any],
                   durations: dict[str, float]) -> None:
    """Every graph serves an input: an artifact nobody ran is not validated. (An input longer than every graph
    is decoded long-form, on the longest one.)"""
    graphs = sorted(dims["graphs"].items(), key=lambda kv: kv[1]["samples"])
    used: set[str] = set()
    for _name, seconds in sorted(durations.items()):
        used.add(next((g for g, d in graphs if d["seconds"] + 1e-9 >= seconds), graphs[-1][0]))
    unused = [g for g, _ in graphs if g not in used]
    if unused and len(graphs) > 1:
        x.fail(sref, "audio_len_s", f"{', '.join(unused)} would serve none of the inputs of validation {ref.name!r}, "
               "so it would be unvalidated; add inputs of those lengths or drop that audio length")


def register(plugins: Plugins) -> None:
    plugins.tasks.add(SpeechTask.name, SpeechTask())
