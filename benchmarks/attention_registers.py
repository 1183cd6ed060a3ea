"""Registers and spills of ``qeffbuild::decode_attention``'s Triton kernel per launch config, compiled offline for
a Hopper GPU (sm_90): no GPU needed, only ``triton`` (its bundled ``ptxas`` and ``cuobjdump``).

    python benchmarks/attention_registers.py [--arch 90]

A program holds its chunk of keys and values in registers (CHUNK × head size, twice); a config whose tile
outgrows 255 registers a thread spills to local memory, which every load and use of the tile then pays for.
The twenty-second session found the writing self-attention at whisper-large-v3's 136 slots (one 256-key chunk,
4 warps) at 9,000 bytes of stack a thread: its masked store of the whole tile kept the tile's pointers live.
It now stores the slot's one row (880 bytes at 4 warps; none at 8).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile

POINTERS = {"q_ptr": "*fp16", "k_ptr": "*fp16", "v_ptr": "*fp16", "m_ptr": "*i1", "o_ptr": "*fp16",
            "p_ptr": "*fp32", "c_ptr": "*i32", "kn_ptr": "*fp16", "vn_ptr": "*fp16", "pos_ptr": "*i64",
            "scale": "fp32"}
# (what, keys, chunk, warps, writing op): whisper-large-v3's self-attention (136 slots) and cross-attention
# (1,500 frames) at the shipped configs and their neighbours
CONFIGS = [("self", 136, 256, 4, True), ("self", 136, 256, 8, True), ("self", 136, 128, 4, True),
           ("self", 136, 64, 4, True), ("self", 136, 64, 2, True), ("self", 136, 32, 4, True),
           ("self", 136, 32, 2, True), ("cross", 1500, 128, 4, False), ("cross", 1500, 128, 2, False),
           ("cross", 1500, 64, 2, False)]


def main() -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from qeffbuild.backends import attention

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90)
    args = ap.parse_args()
    kernel = attention._triton_kernel()
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    print(f"triton {triton.__version__}, sm_{args.arch}")
    for what, keys, chunk, warps, write in CONFIGS:
        splits = -(-keys // chunk)
        consts = {"D": 64, "CHUNK": chunk, "SPLITS": splits, "SPLITS_P2": max(2, triton.next_power_of_2(splits)),
                  "HAS_MASK": False, "WRITE": write, "CAUSAL": write, "PDL": True, "KV_READY": True,
                  "LOAD_ALL": False}
        signature = {n: "constexpr" if n in consts else POINTERS.get(n, "i32") for n in kernel.arg_names}
        compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=consts),
                                  target=GPUTarget("cuda", args.arch, 32), options={"num_warps": warps})
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(compiled.asm["cubin"])
            f.flush()
            usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True,
                                   check=True).stdout
        fields = dict(part.split(":") for part in next(line for line in usage.splitlines() if "REG:" in line).split()
                      if ":" in part and part.split(":")[1].isdigit())
        print(f"  {what:5s} {keys:5d} keys, {chunk:3d}-key chunks ({splits:2d}), {warps} warps: "
              f"{fields.get('REG', '?'):>3s} registers, {fields.get('STACK', '?'):>5s} bytes of stack a thread")


if __name__ == "__main__":
    main()
