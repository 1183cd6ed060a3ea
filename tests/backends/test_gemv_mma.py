"""The several-row tensor-core product's launch plan (backends/gemv_mma.py); its kernel is checked with the one-row
kernels' in test_gemv.py (Triton's interpreter, opt-in, and a GPU)."""

from __future__ import annotations

import pytest

from qeffbuild.backends import gemv_mma


@pytest.mark.parametrize("n,k,plan", [
    (1280, 1280, (256, 1, 5)),  # 20 column tiles: split along K into its 5 blocks (100 programs)
    (3840, 1280, (256, 1, 5)),  # qkv: 60 tiles need 3 parts for 128 programs; 5 is the least that divides
    (5120, 1280, (256, 1, 5)),  # fc1: 80 tiles × 5 parts
    (1280, 5120, (256, 2, 10)),  # fc2: 20 blocks in 10 parts of 2 (200 programs)
    (51866, 1280, (256, 5, 1)),  # the LM head's 811 tiles: no split, each program loops over its 5 blocks
    (7, 384, (128, 1, 3)),  # K = 384: 128-wide blocks, its one tile split into 3
])
def test_a_launch_splits_along_k_only_as_far_as_it_needs_programs(n: int, k: int, plan: tuple[int, int, int]) -> None:
    block_k, chunks, split_k = gemv_mma.blocks(n, k)
    assert (block_k, chunks, split_k) == plan
    assert block_k * chunks * split_k == k


def test_the_workspace_grows_and_keeps_what_a_captured_graph_points_at() -> None:
    torch = pytest.importorskip("torch")
    device = torch.device("cpu")
    gemv_mma._WORKSPACES.pop(("cpu", None), None)
    first = gemv_mma._workspace(device, 100, 4)
    assert gemv_mma._workspace(device, 50, 2) is first  # big enough: the same buffers
    second = gemv_mma._workspace(device, 200, 3)
    assert second[0].numel() == 200 and second[1].numel() == 4 and int(second[1].sum()) == 0
    assert gemv_mma._WORKSPACES[("cpu", None)] == [first, second]  # the first stays alive
    gemv_mma._WORKSPACES.pop(("cpu", None))
