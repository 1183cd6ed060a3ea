"""The `inductor` backend on CPU (its CUDA path is in tests/test_gpu.py): the artifact is the step precompiled by
Inductor plus its weights, and a session in a fresh process loads it, compiling nothing, to the eager answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qeffbuild.backends.inductor import ARTIFACT, AUTOTUNED, WEIGHTS

slow = pytest.mark.slow


def _program(folder: Path) -> dict[str, np.ndarray]:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
    x = torch.randn(2, 8)
    folder.mkdir()
    torch.export.save(torch.export.export(model, (x,)), folder / "program.pt2")
    (folder / "io.json").write_text(json.dumps({"inputs": {"x": "float32"}, "outputs": ["y"],
                                                "shapes": {"x": [2, 8]}, "call": "positional"}))
    with torch.no_grad():
        return {"x": x.numpy(), "y": model(x).numpy()}


BUILD = ("import json, sys; from pathlib import Path; from qeffbuild.backends.inductor import compile_model\n"
         "from qeffbuild.core.steps import StepContext\n"
         "compile_model(StepContext('compile:inductor:t', {'device': 'cpu', 'options': json.loads(sys.argv[3])},"
         " {'program': Path(sys.argv[1])}, {}, Path(sys.argv[2])))")


@pytest.fixture(scope="module")
def build_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Inductor cache for this module's compile steps (its precompiled C++ headers are built once); each
    session still loads in a fresh cache of its own, so nothing a session needs can come from this one."""
    return tmp_path_factory.mktemp("inductor-build")


def _compile(program: Path, out: Path, cache: Path, options: dict[str, bool] | None = None) -> None:
    """The compile step in its own process, as a build's worker runs it: Inductor's CPU kernels depend on the
    process's thread count, which earlier tests in this one may have changed."""
    out.mkdir()
    done = subprocess.run([sys.executable, "-c", BUILD, str(program), str(out), json.dumps(options or {})],
                          capture_output=True, text=True, env=_fresh_inductor_cache(cache))
    assert done.returncode == 0, done.stderr[-2000:]


@slow
def test_a_fresh_process_runs_the_compiled_program_from_its_artifacts(tmp_path: Path, build_cache: Path) -> None:
    data = _program(tmp_path / "program")
    out = tmp_path / "compiled"
    _compile(tmp_path / "program", out, build_cache)
    assert (out / ARTIFACT).stat().st_size > 0 and json.loads((out / AUTOTUNED).read_text()) == {}
    assert not (out / "program.pt2").exists()  # the session needs the artifact and the weights only
    meta = json.loads((out / "inductor.json").read_text())
    assert meta["shapes"] == {"x": [2, 8]} and meta["options"] == {}
    assert meta["weights"] == ["0.weight", "0.bias", "2.weight", "2.bias"] and (out / WEIGHTS).is_file()
    np.save(tmp_path / "x.npy", data["x"])
    child = ("import sys, numpy as np; from pathlib import Path; from torch._dynamo.utils import counters\n"
             "from qeffbuild.backends.inductor import InductorSession\n"
             "s = InductorSession(Path(sys.argv[1]), 'cpu')\n"
             "np.save(sys.argv[3], s.run({'x': np.load(sys.argv[2])})[0])\n"
             "print(counters['inductor']['fxgraph_cache_miss'], counters['stats']['calls_captured'])")
    done = subprocess.run([sys.executable, "-c", child, str(out), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          capture_output=True, text=True, env=_fresh_inductor_cache(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0", "0"]  # Inductor compiled nothing and Dynamo traced nothing
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), data["y"], rtol=1e-5, atol=1e-6)


def test_a_folder_from_another_torch_build_is_refused_with_the_fix(tmp_path: Path) -> None:
    from qeffbuild.backends.inductor import InductorSession
    from qeffbuild.errors import ModelLoadError

    _program(tmp_path / "p")
    with pytest.raises(ModelLoadError, match="rebuild the specialization"):
        InductorSession(tmp_path / "p", "cpu")  # no artifact at all
    (tmp_path / "p" / ARTIFACT).write_bytes(b"not an artifact")
    (tmp_path / "p" / "inductor.json").write_text(json.dumps({"torch": "0.0.1", "weights": []}))
    with pytest.raises(ModelLoadError, match=r"compiled under torch 0\.0\.1"):
        InductorSession(tmp_path / "p", "cpu")


def _fresh_inductor_cache(tmp_path: Path) -> dict[str, str]:
    import os

    return {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "fresh-cache"), "OMP_NUM_THREADS": "2"}


class _Launcher:
    def __init__(self, block: int) -> None:
        from types import SimpleNamespace

        self.config = SimpleNamespace(kwargs={"XBLOCK": block}, num_warps=4, num_stages=1)


class _Kernel:
    """What Inductor's CachingAutotuner has at its first call: the file it was compiled from, a launcher per
    candidate config."""

    def __init__(self, filename: str, src: str | None = None) -> None:
        self.filename = filename
        self.launchers = [_Launcher(64), _Launcher(128), _Launcher(256)]
        if src is not None:  # the Triton JITFunction's source
            self.fn = type("JITFunction", (), {"src": src})()


@pytest.fixture
def pinning(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Inductor's autotuning replaced by a recorder, so a test sees which kernels would have benchmarked."""
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    from qeffbuild.backends import inductor

    benchmarked: list[str] = []

    def benchmark(self: _Kernel, *args: object, **kwargs: object) -> None:
        benchmarked.append(self.filename)
        self.launchers = self.launchers[:1]

    monkeypatch.setattr(CachingAutotuner, "autotune_to_one_config", benchmark)
    monkeypatch.setattr(inductor, "_PINNED", {})
    return benchmarked


def test_a_loaded_kernel_runs_the_launch_config_the_build_chose(tmp_path: Path, pinning: list[str]) -> None:
    """The build records each kernel's chosen config by its source file's name (a hash of its code); a later
    process takes that config without benchmarking, wherever its cache folder is. A kernel the build did not
    record is tuned as Inductor would."""
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    from qeffbuild.backends.inductor import _pin_launch_configs

    chosen = {"cabc123.py": {"kwargs": {"XBLOCK": 128}, "num_warps": 4, "num_stages": 1}}
    (tmp_path / AUTOTUNED).write_text(json.dumps(chosen))
    _pin_launch_configs(tmp_path)
    recorded, other = _Kernel("/elsewhere/cache/ca/cabc123.py"), _Kernel("/tmp/x/zz/czzz.py")
    CachingAutotuner.autotune_to_one_config(recorded)
    CachingAutotuner.autotune_to_one_config(other)
    assert [launcher.config.kwargs for launcher in recorded.launchers] == [{"XBLOCK": 128}]
    assert pinning == ["/tmp/x/zz/czzz.py"]


def test_the_build_records_each_choice_as_it_is_made_and_a_fresh_process_keys_it_by_source(
        tmp_path: Path, pinning: list[str]) -> None:
    """The build's record is taken as each kernel autotunes (torch 2.11 prunes the live kernels, so a scan of them
    after the run found nothing), under a hash of the kernel's Triton source: the same kernel loaded in another
    process, from another cache folder and file name, runs the recorded config without benchmarking."""
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    from qeffbuild.backends.inductor import _pin_launch_configs, _recording_choices

    with _recording_choices() as chosen:
        CachingAutotuner.autotune_to_one_config(_Kernel("/build/ab/cab.py", src="def k(x): pass"))
    assert list(chosen.values()) == [{"kwargs": {"XBLOCK": 64}, "num_warps": 4, "num_stages": 1}]
    assert next(iter(chosen)).startswith("src-") and pinning == ["/build/ab/cab.py"]
    assert CachingAutotuner.autotune_to_one_config.__name__ == "benchmark"  # the wrapper is gone after the block
    (tmp_path / AUTOTUNED).write_text(json.dumps(chosen))
    _pin_launch_configs(tmp_path)
    same, changed = _Kernel("/load/zz/czz.py", src="def k(x): pass"), _Kernel("/load/yy/cyy.py", src="def k(y): pass")
    for kernel in (same, changed):
        CachingAutotuner.autotune_to_one_config(kernel)
    assert [launcher.config.kwargs for launcher in same.launchers] == [{"XBLOCK": 64}]
    assert pinning == ["/build/ab/cab.py", "/load/yy/cyy.py"]  # another source: tuned as Inductor would


def test_a_recorded_config_that_is_no_candidate_is_tuned_as_inductor_would(tmp_path: Path,
                                                                            pinning: list[str]) -> None:
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    from qeffbuild.backends.inductor import _pin_launch_configs

    (tmp_path / AUTOTUNED).write_text(json.dumps({"k.py": {"kwargs": {"XBLOCK": 32}, "num_warps": 4,
                                                           "num_stages": 1}}))
    _pin_launch_configs(tmp_path)
    kernel = _Kernel("/c/k.py")
    CachingAutotuner.autotune_to_one_config(kernel)
    assert pinning == ["/c/k.py"]


@pytest.mark.parametrize("record", ['{"ab/k.best_config": "{}"}', "not json", None])
def test_an_older_or_unreadable_record_pins_nothing(tmp_path: Path, pinning: list[str], record: str | None) -> None:
    """A folder from before the record (.best_config files by path), a damaged one, or none: no error, and every
    kernel is tuned as Inductor would."""
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    from qeffbuild.backends.inductor import _pin_launch_configs

    if record is not None:
        (tmp_path / AUTOTUNED).write_text(record)
    _pin_launch_configs(tmp_path)
    CachingAutotuner.autotune_to_one_config(_Kernel("/c/k.py"))
    assert pinning == ["/c/k.py"]


def test_a_weights_file_missing_a_weight_is_refused_with_the_fix(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from qeffbuild.backends.inductor import _load_weights
    from qeffbuild.errors import ModelLoadError

    save_file({"a": torch.zeros(2)}, str(tmp_path / WEIGHTS))
    (tmp_path / "inductor.json").write_text(json.dumps({"weights": ["a", "b.weight"]}))
    with pytest.raises(ModelLoadError, match=r"lacks b\.weight \(of 2 weights.*rebuild the specialization"):
        _load_weights(tmp_path, "cpu")
    (tmp_path / "inductor.json").write_text(json.dumps({"weights": ["a"]}))
    assert [t.shape for t in _load_weights(tmp_path, "cpu")] == [torch.Size([2])]


def test_the_build_compiles_with_the_specialization_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """[specializations.X.inductor] options reach Inductor as config patches; none set: no patches, the default
    compile as before options existed."""
    import torch

    from qeffbuild.backends import inductor

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(torch._inductor, "standalone_compile", lambda gm, args, **kw: calls.append(kw["options"]))
    _toy_decoder(tmp_path / "p")
    step = inductor._FlatStep(_ToyStep.module(), json.loads((tmp_path / "p" / "io.json").read_text()))
    args = [torch.zeros(2, 1, dtype=torch.long), torch.tensor(0), torch.zeros(2, 6, 4), torch.zeros(2, 6, 4)]
    inductor._precompile(step, step.weights(), args, {}, [])
    inductor._precompile(step, step.weights(), args, inductor.InductorOptions(coordinate_descent_tuning=True)
                         .compile_options(), [])
    assert calls == [{}, {"config_patches": {"coordinate_descent_tuning": True}}]
    assert inductor.InductorOptions(triton_gemv=False).compile_options() == {}  # ours, not an Inductor patch
    assert inductor.InductorOptions(gemv_fusion=False).compile_options() == {}
    assert inductor.InductorOptions(triton_attention=False).compile_options() == {}
    assert inductor.InductorOptions(attention_writes_state=False).compile_options() == {}
    assert inductor.InductorOptions(gemv_max_rows=8).compile_options() == {}
    assert inductor.InductorOptions().gemv_max_rows == 16  # a batch of up to 16 rows: the tensor-core GEMV


def test_the_custom_ops_a_compile_may_route_to() -> None:
    from qeffbuild.backends import attention, gemv, inductor

    assert inductor.InductorOptions().custom_ops("cpu") == []
    writes = [attention.OP, attention.WRITE_OP]
    assert inductor.InductorOptions().custom_ops("cuda") == [*writes, gemv.OP, gemv.FUSED_OP]
    assert inductor.InductorOptions(gemv_fusion=False).custom_ops("cuda") == [*writes, gemv.OP]
    assert inductor.InductorOptions(triton_gemv=False, gemv_fusion=True).custom_ops("cuda") == writes
    assert inductor.InductorOptions(attention_writes_state=False).custom_ops("cuda") == [attention.OP, gemv.OP,
                                                                                         gemv.FUSED_OP]
    assert inductor.InductorOptions(triton_attention=False, triton_gemv=False).custom_ops("cuda") == []
    assert inductor.InductorOptions(triton_gemv=False, triton_attention=False).custom_ops("cuda") == []


class _ToyStep:
    """A decoder step as the families export one: (input_ids, position, past_*) → (logits, present_*), the new
    state written at ``position`` by a select (RetainedLayer's decode write)."""

    @staticmethod
    def module() -> object:
        import torch

        class Step(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                torch.manual_seed(0)
                self.emb = torch.nn.Embedding(11, 4)
                self.head = torch.nn.Linear(4, 11)

            def forward(self, ids: torch.Tensor, position: torch.Tensor, past_key_0: torch.Tensor,
                        past_value_0: torch.Tensor) -> tuple[torch.Tensor, ...]:
                x = self.emb(ids)  # [b, 1, 4]
                write = (torch.arange(past_key_0.shape[1]) == position).view(1, -1, 1)
                keys = torch.where(write, x, past_key_0)
                values = torch.where(write, 2 * x, past_value_0)
                att = torch.softmax(x @ keys.transpose(1, 2), -1) @ values
                return self.head(att), keys, values

        return Step().eval()


def _toy_decoder(folder: Path) -> None:
    import torch

    example = (torch.zeros(2, 1, dtype=torch.long), torch.tensor(0), torch.zeros(2, 6, 4), torch.zeros(2, 6, 4))
    folder.mkdir()
    torch.export.save(torch.export.export(_ToyStep.module(), example), folder / "program.pt2")  # type: ignore[arg-type]
    (folder / "io.json").write_text(json.dumps({
        "inputs": {"input_ids": "int64", "position": "int64", "past_key_0": "float32", "past_value_0": "float32"},
        "outputs": ["logits", "present_key_0", "present_value_0"], "call": "positional",
        "shapes": {"input_ids": [2, 1], "position": [], "past_key_0": [2, 6, 4], "past_value_0": [2, 6, 4]}}))


@slow
def test_a_decoder_step_writes_its_state_in_place_and_decodes_as_the_program(tmp_path: Path,
                                                                             build_cache: Path) -> None:
    """The compiled step writes each present_X into its past_X input (no copy back); as a function (`run`) it
    leaves its inputs alone; and the device loop over it picks the tokens the host loop picks over the program."""
    import torch

    from qeffbuild.backends.inductor import InductorSession
    from qeffbuild.decoding.greedy import greedy
    from qeffbuild.decoding.rules import LogitRules
    from qeffbuild.runtimes.torch import open_program

    _toy_decoder(tmp_path / "p")
    _compile(tmp_path / "p", tmp_path / "c", build_cache)
    session = InductorSession(tmp_path / "c", "cpu")
    program = open_program(tmp_path / "p")
    assert session.retained_in_place
    rng = np.random.default_rng(0)
    feeds = {"input_ids": np.array([[3], [7]]), "position": np.array(2),
             "past_key_0": rng.standard_normal((2, 6, 4), np.float32),
             "past_value_0": rng.standard_normal((2, 6, 4), np.float32)}
    before = {k: v.copy() for k, v in feeds.items()}
    want = program.run(feeds)
    got = session.run(feeds)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(feeds[k], before[k]) for k in feeds)  # `run` is a function
    tensors = {k: torch.from_numpy(v.copy()) for k, v in feeds.items()}
    logits = session.step_in_place(tensors)
    assert len(logits) == 1
    np.testing.assert_allclose(logits[0].numpy(), want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tensors["past_key_0"].numpy(), want[1], rtol=1e-6)  # the input now holds the state
    np.testing.assert_allclose(tensors["past_value_0"].numpy(), want[2], rtol=1e-6)

    io = json.loads((tmp_path / "c" / "io.json").read_text())
    rules = LogitRules(eos=10)
    prompts = np.array([[1, 2], [4, 5]])
    on_device = greedy(session, io, [], prompts, rules, steps=4)
    on_host = greedy(_Host(program), io, [], prompts, rules, steps=4)
    assert np.array_equal(on_device.tokens, on_host.tokens) and on_device.tokens.shape == (2, 4)


class _Host:
    """A session seen through `run` only: the host loop."""

    def __init__(self, session: object) -> None:
        self.session = session

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(feeds)  # type: ignore[attr-defined,no-any-return]


def test_kernel_benchmarks_are_counted_without_importing_inductor_early() -> None:
    """The start-up counter is an import hook: installing it imports nothing, and every benchmark a kernel runs
    after Inductor's runtime is imported is counted (Inductor's own counter replays the build's counts)."""
    code = ("import sys\nfrom qeffbuild.backends.inductor import count_kernel_benchmarks\n"
            "n = count_kernel_benchmarks()\n"
            "early = 'torch._inductor.runtime.triton_heuristics' in sys.modules\n"
            "from torch._inductor.runtime.triton_heuristics import CachingAutotuner\n"
            "for _ in range(2):\n"
            "    try:\n        CachingAutotuner.bench(object())\n    except Exception:\n        pass\n"
            "print(early, n[0])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["False", "2"]


def test_a_load_does_not_hash_tritons_sources_and_puts_the_hash_back() -> None:
    """Inside the load, Inductor's cache-hit path gets no backend hash (it only keys a cache that is off here);
    after it, torch's own function is back for any compile in the process."""
    import torch.utils._triton as triton_utils
    from torch._inductor.runtime import autotune_cache

    from qeffbuild.backends import inductor

    real = triton_utils.triton_hash_with_backend
    with inductor._no_backend_hash():
        assert triton_utils.triton_hash_with_backend() is None
        assert autotune_cache.inductor_meta_from_config()["backend_hash"] is None
    assert triton_utils.triton_hash_with_backend is real
