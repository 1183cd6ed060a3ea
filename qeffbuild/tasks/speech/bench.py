"""`qeffbuild bench` for speech: each runtime beside Hugging Face's ``generate``, timed the same way, in one run.

Per runtime and specialization, on the validation's first utterance at the specialization's batch size:

- **encoder**: the encoder side as the decode runs it (features in, cross-attention keys/values out, on the
  session's device for torch sessions), synchronised;
- **per token**: the decoder loop timed at ``N`` and at 1 new tokens, both from the same encoder outputs:
  ``(T(N) − T(1)) / (N − 1)`` is one decode step, warm (compiled, captured), whatever the prompt and the
  encoder cost — what a plain script timing ``generate`` twice measures, and what the ``generate`` row is
  measured with (``min_new_tokens = max_new_tokens``, the checkpoint's own generation config, greedy);
- **utterance**: a whole transcription of the batch (features, encoder, N tokens), and utterances/s.

Validations with audio longer than the window add a **long-form** row per runtime: the real-time factor of
decoding those recordings long-form beside HF's own long-form ``generate`` on the same files.

Where CTranslate2 is installed (faster-whisper's engine) and the architecture has a CTranslate2 converter,
**faster-whisper rows** (float32 and int8) convert the same weights with CTranslate2's own Transformers
converter (a cached artifact derived from the model step: the first bench converts, later ones find it) and
time ``Whisper.generate`` the same two ways on the same features — greedy, no timestamps, EOS suppressed so that
a random-weight model emits exactly N tokens on both sides — with as many threads as this machine has cores
(``intra_threads``), as faster-whisper sets them.

On a GPU each runtime row also carries the **roofline** columns (``decoding.roofline``): the bytes one decode
step must move (decoder weights once, the cross-attention states and the self-attention slots up to the step's
position, averaged over the timed steps), the bandwidth that
implies at the measured per-token time, and its fraction of the device's measured copy bandwidth.

Every short-input row is opened and warmed before any is timed; then the rows take their samples round-robin,
in blocks (``reports.timing.interleave``), so rows compared by a ratio were measured over the same minutes.
Every row carries the spread of its samples (``reports.timing``); the CLI warns when it exceeds 10 %.
"""

from __future__ import annotations

import functools
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core.steps import StepNode
from ...reports.timing import LOADED, StepSamples, interleave, percentiles


def bench(artifact: Any, node: StepNode, iters: int, warmup: int) -> list[dict[str, Any]]:
    """``artifact(role)`` gives the folder of the validation's upstream step with that role.

    Every short-input row is opened and warmed first, then all are measured together, round-robin
    (:func:`~qeffbuild.reports.timing.interleave`), so that each ratio compares rows measured side by side; the
    long-form rows follow, each on its own."""
    from ...pipeline.torchutil import quiet_warnings, strict_fp32, torch_device, torch_dtype

    quiet_warnings()
    strict_fp32()  # no TF32: runtimes are compared with a float32 reference
    from .driver import DecodeConfig, Frontend
    from .transform import load_model
    from .validate import open_graphs
    from .validate_long import LongInputs, is_long

    p = node.params
    arch, steps = p["arch"], max(2, int(p["max_new_tokens"]))
    model_dir = artifact("model") / "model"
    dc = DecodeConfig.from_model_dir(model_dir, p["language"], arch, p.get("task"))
    frontend = Frontend(model_dir, arch)
    utts = _utterances(p, node)
    inputs = {role: artifact(role) for role in node.deps}
    models: dict[tuple[str, str], Any] = {}
    ct2_batches: set[int] = set()
    rows: list[dict[str, Any]] = []
    bases: dict[str, dict[str, Any]] = {}  # per specialization: its generate row, what the others are divided by
    bandwidth: dict[str, float] = {}  # per GPU device: measured once per bench
    generated: set[str] = set()
    groups, apart = _memory_groups(p["specializations"], p["runtimes"], inputs, model_dir)
    for group in groups:  # every row at once, or fewer where their sessions would not fit in memory together
        probes: list[_Probe] = []
        later: list[Callable[[], list[dict[str, Any]]]] = []  # long-form rows, measured after the short ones
        for spec, runtimes in group:
            short = next((u for u in utts if not is_long(u, spec)), None)
            where = (spec["device"], spec["dtype"])  # generate runs on the same device, in the same precision
            if where not in models:
                models[where] = load_model(model_dir, torch_dtype(spec["dtype"])).to(torch_device(spec["device"]))
            model = models[where]
            longs = [u for u in utts if is_long(u, spec)]
            graphs = {runtime: open_graphs(runtime, opens, spec, inputs) for runtime, opens in runtimes.items()
                      if opens != "reference"}  # the reference decodes without a cache: not a deployment runtime
            if short is not None:
                if spec["name"] not in generated:  # once a specialization, in its first group
                    generated.add(spec["name"])
                    probes.append(_generate_probe(model, frontend, short, dc, steps, spec, warmup))
                if spec["device"] == "cpu" and spec["batch_size"] not in ct2_batches:
                    ct2_batches.add(spec["batch_size"])  # one pair per batch size: float32 and int8 specs share it
                    probes += _ctranslate2_probes(artifact, arch, frontend, short, dc, steps, spec, warmup)
                probes += [_runtime_probe(runtime, frontend, *opened, short, dc, steps, spec, warmup, model)
                           for runtime, opened in graphs.items()]
            if longs:
                long = LongInputs(p["longform"], dc, frontend, model, p["language"], p["task"])
                later.append(functools.partial(_long_rows, long, longs, graphs, spec, iters))
            del graphs  # the probes and long-form rows hold what they use; the next group opens its own
        interleave(probes, iters)
        for probe in probes:
            row = probe.row(bases.get(probe.spec["name"]))
            if probe.label == GENERATE:
                bases[probe.spec["name"]] = row
            rows.append(_with_roofline(row, probe.model, probe.decoder_io, probe.spec, bandwidth,
                                       _mean_slots(len(dc.prompt), steps))
                        if probe.decoder_io is not None else row)
        for long_rows in later:
            rows += long_rows()
        del probes, later
        gc.collect()  # this group's sessions go before the next group's open
    return [{**r, "measured_apart": apart} for r in _versus_faster_whisper(rows)] if apart \
        else _versus_faster_whisper(rows)


# Host memory a CPU session takes, as a multiple of its artifact's bytes (ONNX Runtime prepacks its weights beside
# the loaded ones; AOTInductor maps its package and unpacks it; ~2.3 measured at whisper-large-v3's dims), and the
# share of the free memory the bench lets its sessions and models take.
SESSION_MEMORY = 2.5
MEMORY_SHARE = 0.7


Group = list[tuple[dict[str, Any], dict[str, str]]]  # (specialization, the runtimes of it measured) side by side


def _memory_groups(specs: list[dict[str, Any]], runtimes: dict[str, str], inputs: dict[str, Path],
                   model_dir: Path) -> tuple[list[Group], str]:
    """The rows measured side by side: all of them; else each specialization's alone; else each runtime's alone
    (beside its specialization's generate row, measured with the first), where the host's free memory cannot hold
    more at once. With why, for the rows: their ratios then compare fewer rows. The bench opens every row of a
    group before it measures any (round-robin), so whisper-large-v3's dimensions on 24 GB (3.2 GB ONNX Runtime
    decoders, a 3.3 GB AOTInductor package and the reference model) were killed by the kernel's out-of-memory
    killer with nothing said, and one specialization's rows at once still thrashed."""
    free = available_memory()
    model = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) * len({s["dtype"] for s in specs})
    need = {s["name"]: {rt: _host_bytes(s, {rt: opens}, inputs) for rt, opens in runtimes.items()} for s in specs}
    total = model + sum(sum(per.values()) for per in need.values())
    room = MEMORY_SHARE * free if free is not None else float("inf")
    if total <= room:
        return [[(s, runtimes) for s in specs]], ""
    said = f"all of them together need ~{total / 1e9:.1f} GB of memory, {(free or 0) / 1e9:.1f} GB is free"
    if len(specs) > 1 and all(model + sum(need[s["name"]].values()) <= room for s in specs):
        return [[(s, runtimes)] for s in specs], f"each specialization's rows were measured without the others': {said}"
    return ([[(s, {rt: opens})] for s in specs for rt, opens in runtimes.items() if opens != "reference"],
            f"each runtime's rows were measured on their own, after generate's: {said}")


def _host_bytes(spec: dict[str, Any], runtimes: dict[str, str], inputs: dict[str, Path]) -> int:
    """The host memory a CPU specialization's sessions take (a GPU's live on the device)."""
    if spec["device"] != "cpu":
        return 0
    prefixes = {("program" if opens == "program" else opens) for opens in runtimes.values() if opens != "reference"}
    folders = [f for role, f in inputs.items() if role.split("/")[0] in prefixes and f"/{spec['name']}/" in role]
    size = sum(p.stat().st_size for f in folders for p in f.rglob("*") if p.is_file())
    return int(size * SESSION_MEMORY)


def available_memory() -> int | None:
    """The memory the OS can give without swapping (/proc/meminfo's MemAvailable), or None where it does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


GENERATE = "generate (HF, eager)"
# What a row's "encoder" figure times: qeffbuild's encoder side also projects every decoder layer's cross-attention
# keys and values (once an utterance: whisper-large-v3's 32 layers make that most of it); generate and CTranslate2
# project them in their first decoder step, which their utterance time holds. The utterance figures compare.
ENCODER_SIDE = "encoder + every decoder layer's cross-attention keys and values"
ENCODER_ALONE = "encoder alone (cross-attention keys and values in the first decoder step)"


@dataclass
class _Probe:
    """One bench row's measurements, a block at a time: per block an untimed ``opening`` call (the whole path:
    caches and thread pools back from the previous row), then per sample a pair of decodes (1 and N tokens from
    the same encoder outputs) and one timed call of each ``part`` (encoder, features, utterance). Without an
    ``utterance`` part the pairs' N-token decodes are the utterance samples."""

    label: str
    spec: dict[str, Any]
    audio_s: float
    device: Any
    steps: StepSamples
    parts: dict[str, Callable[[], Any]]
    opening: Callable[[], Any]
    model: Any = None  # the reference model on the row's device (a GPU row's roofline weighs its decoder)
    decoder_io: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    encoder_covers: str = ENCODER_SIDE

    def __call__(self, k: int) -> None:
        self.opening()
        for _ in range(k):
            self.steps.take()
            for name, fn in self.parts.items():
                self.samples.setdefault(name, []).append(_timed(fn, self.device))

    def row(self, base: dict[str, Any] | None) -> dict[str, Any]:
        import numpy as np

        # a row whose whole utterance is its N-token decode (generate, CTranslate2) has it in its pairs already
        whole = self.samples.get("utterance") or self.steps.full
        row = _row(self.label, self.spec, self.steps.steps, self.samples.get("encoder", []), self.steps.per,
                   whole, base, self.audio_s)
        if "features" in self.samples and "unavailable" not in row:
            row["features_p50_ms"] = float(np.median(self.samples["features"])) * 1000
        return {**row, **self.extra, "encoder_covers": self.encoder_covers} if "unavailable" not in row else row


def _mean_slots(prompt: int, steps: int) -> float:
    """The self-attention slots a timed decode step attends over, on average: per token is (T(N) − T(1)) / (N − 1),
    the steps after the prompt's at positions prompt … prompt + N − 2, each over its position + 1 slots."""
    return prompt + steps / 2


def _with_roofline(row: dict[str, Any], model: Any, decoder_io: dict[str, Any], spec: dict[str, Any],
                   bandwidth: dict[str, float], slots: float) -> dict[str, Any]:
    """GPU rows: the step's bytes (weights in the spec's precision, the graph's states: the self-attention cache
    at the ``slots`` a step attends over) against the copy bandwidth of the device it ran on."""
    from ...decoding.roofline import copy_bandwidth, roofline, state_bytes, weight_bytes

    if spec["device"] != "cuda" or row.get("p50_ms", 0) <= 0:
        return row
    device = str(model.device)
    if device not in bandwidth:
        bandwidth[device] = copy_bandwidth(model.device)
    step = weight_bytes(model.get_decoder(), model.get_output_embeddings()) + state_bytes(decoder_io, slots)
    return {**row, **roofline(step, row["p50_ms"] / 1000, bandwidth[device])}


def _versus_faster_whisper(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each artifact row's real-time factor over faster-whisper int8's at the same batch size and shape:
    the CPU user's fastest choice today, so the figure the issue's target is stated in."""
    int8 = {(r["batch_size"], r["shape"]): r["realtime_x"] for r in rows
            if r["runtime"].startswith("faster-whisper") and r["runtime"].endswith("int8)") and "realtime_x" in r}
    for r in rows:
        ref = int8.get((r["batch_size"], r.get("shape")))
        if ref and "realtime_x" in r and not r["runtime"].startswith(("faster-whisper", "generate")):
            r["speedup_vs_faster_whisper_int8"] = r["realtime_x"] / ref
    return rows


def _utterances(p: dict[str, Any], node: StepNode) -> list[Any]:
    """The validation's first utterance, and every one longer than the window (for the long-form rows)."""
    from .driver import Utterance, load_rows

    if p["inputs"]["kind"] == "hf":
        from ...pipeline.datasets import open_hf

        name, audio, text = open_hf(node.paths["dataset"], {**p["inputs"], "limit": 1})[0]
        return [Utterance(name, audio, text)]
    rows = p["inputs"]["rows"]
    longest = max(max(s["graphs"].values()) for s in p["specializations"]) / 16000
    chosen = [rows[0], *[r for r in rows[1:] if r["seconds"] > longest]]
    return load_rows(chosen, {f.label: Path(f.path) for f in node.files})


def _sync(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: Any) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _step_samples(decode: Callable[[int], Any], steps: int, device: Any) -> StepSamples:
    """Seconds per decode step from synchronised pairs of decodes (:class:`~qeffbuild.reports.timing.StepSamples`)."""
    return StepSamples(lambda n: _timed(lambda: decode(n), device), steps)


def _generate_probe(model: Any, frontend: Any, utt: Any, dc: Any, steps: int, spec: dict[str, Any],
                    warmup: int) -> _Probe:
    """``model.generate`` as a user runs it: the checkpoint's generation config, greedy, timed twice."""
    import torch

    from .driver import hf_generate, reference_encoder, to_torch

    b = spec["batch_size"]
    feeds = frontend.features([utt.audio] * b, max(spec["graphs"].values()))

    def decode(n: int) -> Any:
        return hf_generate(model, dc.arch, feeds, dc, n, min_new_tokens=n)

    def encoder() -> None:
        with torch.no_grad():
            reference_encoder(model, dc.arch, to_torch(feeds, model))

    for _ in range(max(warmup, 2)):
        decode(steps)
    return _Probe(GENERATE, spec, utt.seconds, model.device, _step_samples(decode, steps, model.device),
                  {"encoder": encoder}, opening=lambda: decode(steps), encoder_covers=ENCODER_ALONE)


def _ctranslate2_probes(artifact: Any, arch: str, frontend: Any, utt: Any, dc: Any, steps: int,
                        spec: dict[str, Any], warmup: int) -> list[_Probe]:
    """faster-whisper's engine on the same weights: float32 and int8, timed as every other row. Each conversion
    (CTranslate2's own Transformers converter) is a cached artifact derived from the model step: made by the
    first bench, found by every later one."""
    import importlib.util
    import os

    from .families import named

    if not named(arch).ctranslate2 or importlib.util.find_spec("ctranslate2") is None:
        return []
    import ctranslate2
    import numpy as np

    b = spec["batch_size"]
    feeds = frontend.features([utt.audio] * b, max(spec["graphs"].values()))
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(feeds["input_features"], dtype=np.float32))
    prompts = [list(dc.prompt)] * b
    probes = []
    for compute in ("float32", "int8"):
        folder = artifact.derived("model", "ctranslate2", {"ctranslate2": ctranslate2.__version__,
                                                            "quantization": compute},
                                  functools.partial(_ct2_convert, quantization=compute))
        engine = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type=compute,
                                            intra_threads=os.cpu_count() or 1)
        run = functools.partial(_ct2_generate, engine, features, prompts,
                                sorted({dc.eos, *dc.suppress}))  # EOS suppressed: exactly N tokens
        lengths = {n: _ct2_max_length(run, n, len(dc.prompt)) for n in (1, steps)}

        def decode(n: int, run: Any = run, lengths: dict[int, int] = lengths) -> Any:
            return run(lengths[n])

        for _ in range(max(warmup, 1)):
            decode(steps)
        whole = functools.partial(decode, steps)
        probes.append(_Probe(f"faster-whisper (CTranslate2 {ctranslate2.__version__}, {compute})", spec, utt.seconds,
                             "cpu", _step_samples(decode, steps, "cpu"),
                             {"encoder": functools.partial(engine.encode, features)},
                             opening=whole,
                             extra={"tokens_emitted": len(whole()[0].sequences_ids[0]),
                                    "threads": os.cpu_count() or 1},
                             encoder_covers=ENCODER_ALONE))
    return probes


def _ct2_convert(model_step: Path, folder: Path, quantization: str) -> None:
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(model_step / "model")).convert(str(folder), quantization=quantization, force=True)


def _ct2_generate(engine: Any, features: Any, prompts: list[list[int]], suppress: list[int], max_length: int) -> Any:
    return engine.generate(features, prompts, beam_size=1, max_length=max_length, suppress_tokens=suppress,
                           suppress_blank=False, return_no_speech_prob=False)


def _ct2_max_length(run: Callable[[int], Any], n: int, prompt: int) -> int:
    """The ``max_length`` that makes CTranslate2's Whisper emit exactly ``n`` tokens, found by trying. 4.8
    decodes ``max_length // 2`` steps (its per-step logits say so, not only its output), other versions count
    the prompt or not; a row timed at another length would compare other work."""
    for candidate in (n, 2 * n, n + prompt, *range(1, 2 * (n + prompt) + 2)):
        try:
            if len(run(candidate)[0].sequences_ids[0]) == n:
                return candidate
        except ValueError:  # "the maximum decoding length must be > 0" for a length inside the prompt
            continue
    raise RuntimeError(f"CTranslate2 would not emit exactly {n} tokens for any max_length tried")


def _runtime_probe(runtime: str, frontend: Any, encoders: dict[str, Any], decoder: Any, decoder_io: dict[str, Any],
                   utt: Any, dc: Any, steps: int, spec: dict[str, Any], warmup: int, model: Any) -> _Probe:
    import numpy as np

    from ...decoding.greedy import greedy
    from .driver import batches, encode

    b = spec["batch_size"]
    graph = batches([utt], spec["graphs"], 1)[0][0]
    samples = spec["graphs"][graph]
    enc = encoders[graph]
    feeds = frontend.features([utt.audio] * b, samples)
    prompts = np.array([dc.prompt] * b, dtype=np.int64)
    fixed = encode(enc, decoder, feeds)
    device = getattr(decoder, "device", "cpu")

    def decode(n: int) -> Any:
        return greedy(decoder, decoder_io, fixed, prompts, dc.rules(), n)

    def features() -> Any:
        return frontend.features([utt.audio] * b, samples)

    def transcribe() -> Any:
        return greedy(decoder, decoder_io, encode(enc, decoder, features()), prompts, dc.rules(), steps)

    for _ in range(max(warmup, 1)):  # compile, capture, first-call work: out of every timed sample
        decode(steps)
        decode(1)
    # the features alone are host work: with the encoder and the decode, they account for the whole utterance
    return _Probe(runtime, spec, utt.seconds, device, _step_samples(decode, steps, device),
                  {"encoder": lambda: encode(enc, decoder, feeds), "features": features, "utterance": transcribe},
                  opening=transcribe, model=model, decoder_io=decoder_io)


def _row(runtime: str, spec: dict[str, Any], steps: int, enc_s: list[float], per_token_s: list[float],
         whole_s: list[float], base: dict[str, Any] | None, audio_s: float) -> dict[str, Any]:
    import numpy as np

    b = spec["batch_size"]
    if not per_token_s:
        return {"runtime": runtime, "specialization": spec["name"], "dtype": spec["dtype"], "batch_size": b,
                "unavailable": LOADED.format(steps=steps)}
    lat = percentiles(per_token_s)
    utt_ms = float(np.median(whole_s)) * 1000
    row = {"runtime": runtime, "specialization": spec["name"], "dtype": spec["dtype"], "batch_size": b,
           "shape": f"ctx {spec['ctx_len']}, {steps} tokens", "encoder_p50_ms": float(np.median(enc_s)) * 1000,
           **lat, "throughput_per_s": b * 1000 / lat["p50_ms"] if lat["p50_ms"] > 0 else 0.0, "unit": "tokens",
           "utterance_p50_ms": utt_ms, "utterances_per_s": b * 1000 / utt_ms,
           "realtime_x": b * audio_s * 1000 / utt_ms,  # seconds of audio transcribed per second
           "method": "per token = (T(N) - T(1)) / (N - 1), warm; encoder on the decode's path"}
    if base is not None and "p50_ms" in base and lat["p50_ms"] > 0:
        row["speedup_per_token_vs_generate"] = base["p50_ms"] / lat["p50_ms"]
        row["speedup_per_utterance_vs_generate"] = base["utterance_p50_ms"] / utt_ms
    return row


def _long_rows(long: Any, longs: list[Any], graphs: dict[str, tuple[Any, Any, Any]], spec: dict[str, Any],
               iters: int) -> list[dict[str, Any]]:
    """HF's own long-form ``generate`` on the recordings, then each runtime long-form beside it."""
    runs = max(1, min(iters, 3))
    times = [_timed(lambda: [long.reference_uncached(u, spec) for u in longs], long.model.device)
             for _ in range(runs)]
    base = _long_values("generate (HF, long-form)", spec, longs, times, None)
    rows = [base]
    audios = [u.audio for u in longs]
    for runtime, (encoders, decoder, decoder_io) in graphs.items():
        run = functools.partial(long.on_runtime, encoders, decoder, decoder_io, audios, spec)
        run()  # warm
        times = [_timed(run, getattr(decoder, "device", "cpu")) for _ in range(runs)]
        rows.append(_long_values(runtime, spec, longs, times, base))
    return rows


def _long_values(runtime: str, spec: dict[str, Any], longs: list[Any], times: list[float],
                 base: dict[str, Any] | None) -> dict[str, Any]:
    import numpy as np

    audio_s = sum(u.seconds for u in longs)
    lat = percentiles(times)
    rtf = float(np.median(times)) / audio_s
    row = {"runtime": runtime, "specialization": spec["name"], "dtype": spec["dtype"],
           "batch_size": spec["batch_size"], "shape": f"long-form, {len(longs)} recordings, {audio_s:.0f} s",
           **lat, "throughput_per_s": 1 / rtf, "unit": "audio s", "rtf": rtf}
    if base is not None:
        row["speedup_vs_hf_longform"] = base["rtf"] / rtf
    return row
