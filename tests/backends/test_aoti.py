"""backends/aoti: a CPU package is frozen unless its every product has one row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")


class _Step(torch.nn.Module):
    """A decoder-like step: an embedding table tied to the output product, a projection between."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(64, 16)
        self.proj = torch.nn.Linear(16, 16)
        self.head = torch.nn.Linear(16, 64, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: Any) -> Any:
        return self.head(torch.relu(self.proj(self.embed(ids))))


def _export(module: Any, *example: Any) -> Any:
    return torch.export.export(module.eval(), example, strict=False)


def test_one_row_products_are_not_frozen_and_several_are() -> None:
    from qeffbuild.backends.aoti import freezing_for, product_rows

    one = _export(_Step(), torch.zeros(1, 1, dtype=torch.long))
    four = _export(_Step(), torch.zeros(4, 1, dtype=torch.long))
    assert product_rows(one) == [1, 1] and not freezing_for(one)
    assert product_rows(four) == [4, 4] and freezing_for(four)
    mm = _export(torch.nn.Linear(8, 8), torch.zeros(3, 8))
    assert freezing_for(mm)
    assert not freezing_for(_export(torch.nn.ReLU(), torch.zeros(2, 8)))  # no product: nothing to prepack


def test_a_one_row_package_is_compiled_unfrozen_and_matches_eager(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The compile step on a batch-1 step: not frozen (the tied table and head stored once), outputs as eager's."""
    from qeffbuild.backends.aoti import AotiSession, compile_model
    from qeffbuild.core.steps import StepContext
    from qeffbuild.pipeline.torchutil import save_program

    torch.manual_seed(0)
    module = _Step().eval()
    ids = torch.tensor([[5]])
    src, out = tmp_path / "program", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    save_program(_export(module, ids), src / "program.pt2")
    io = {"inputs": {"ids": "int64"}, "outputs": ["logits"], "shapes": {"ids": [1, 1]}, "call": "positional"}
    (src / "io.json").write_text(json.dumps(io))
    (out / "io.json").write_text(json.dumps(io))
    compile_model(StepContext(node_id="compile", params={"device": "cpu"}, inputs={"program": src}, files={},
                              out=out))
    assert "not frozen (every product has one row)" in capsys.readouterr().out
    session = AotiSession(out)
    got = session.run_tensors({"ids": ids})[0]
    assert torch.allclose(got, module(ids), atol=1e-5)
