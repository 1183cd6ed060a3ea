"""A STAND-IN for the Cloud AI 100 compiler (qaic-compile), for tests only.

The real compiler ships in Qualcomm's Apps SDK and cannot run on the machines qeffbuild is
tested on. This script takes qaic-compile's command line, checks every argument and the files
they name the way the compiler reads them (the ONNX, specializations.json, custom_io.yaml, the
MDP partition config), and writes a "program" file where the compiler writes its QPC. It does
not compile anything: it proves that qeffbuild calls the compiler correctly and caches its output.

Each call appends its argv as one JSON line to $QAIC_STANDIN_LOG; $QAIC_STANDIN_FAIL makes it fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

HW_VERSIONS = ("ai100", "ai200", "2.0")
PRECISIONS = ("float16", "float32", "mxint8", "int8", "bfloat16")


def fail(message: str) -> None:
    print(f"qaic-compile (stand-in): error: {message}", file=sys.stderr)
    sys.exit(2)


def parse(argv: list[str]) -> tuple[set[str], dict[str, str]]:
    flags: set[str] = set()
    values: dict[str, str] = {}
    for arg in argv:
        m = re.fullmatch(r"-([A-Za-z][A-Za-z0-9-]*)(?:=(.+))?", arg)
        if m is None:
            fail(f"cannot parse argument {arg!r}")
        name, value = m.group(1), m.group(2)
        if value is None:
            flags.add(name)
        elif name in values:
            fail(f"-{name} given twice")
        else:
            values[name] = value
    return flags, values


def onnx_io(path: Path) -> tuple[dict[str, list[object]], set[str]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    io = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
          for v in [*model.graph.input, *model.graph.output]}
    outputs = {o.name for o in model.graph.output}
    return io, outputs


def check_specializations(path: Path, io: dict[str, list[object]]) -> int:
    data = json.loads(path.read_text())
    entries = data.get("specializations")
    if not isinstance(entries, list) or not entries:
        fail(f"{path}: no specializations list")
    symbols_in_graph = {d for dims in io.values() for d in dims if isinstance(d, str)}
    names = set()
    for entry in entries:
        symbols = entry.get("symbols", entry)
        if "symbols" in entry:
            if entry["name"] in names:
                fail(f"{path}: graph name {entry['name']} twice")
            names.add(entry["name"])
        for key, value in symbols.items():
            if not isinstance(value, str) or not value.isdigit():
                fail(f"{path}: symbol {key} must be a string of digits, got {value!r}")
            if key not in symbols_in_graph:
                fail(f"{path}: symbol {key} is not a dimension of the ONNX graph ({sorted(symbols_in_graph)})")
        missing = symbols_in_graph - set(symbols)
        if missing:
            fail(f"{path}: the ONNX graph's dimensions {sorted(missing)} have no value")
    return len(entries)


def check_custom_io(path: Path, io: dict[str, list[object]]) -> None:
    text = path.read_text()
    entries = re.findall(r"^ - IOName: (\S+)\n   Precision: (\S+)\n\n", text, re.M)
    if not entries or len(entries) != text.count("IOName"):
        fail(f"{path}: not a custom IO list (' - IOName: X' / '   Precision: Y' entries)")
    for name, precision in entries:
        if name not in io:
            fail(f"{path}: {name} is not an input or output of the ONNX graph")
        if precision not in PRECISIONS:
            fail(f"{path}: precision {precision} of {name}")


def check_mdp(path: Path, cores: int) -> None:
    data = json.loads(path.read_text())
    devices = data["connections"][0]["devices"]
    part = data["partitions"][0]
    if [d["deviceId"] for d in part["devices"]] != devices or any(d["numCores"] != cores for d in part["devices"]):
        fail(f"{path}: partition devices/cores disagree with the connections or -aic-num-cores")


def main(argv: list[str]) -> None:
    log = os.environ.get("QAIC_STANDIN_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(argv) + "\n")
    if os.environ.get("QAIC_STANDIN_FAIL"):
        print("qaic-compile (stand-in): error: Graph compilation failed (asked to by QAIC_STANDIN_FAIL)",
              file=sys.stderr)
        sys.exit(3)
    flags, values = parse(argv)
    for required in ("aic-hw", "convert-to-fp16"):
        if required not in flags:
            fail(f"-{required} is required")
    if values.get("aic-hw-version") not in HW_VERSIONS:
        fail(f"-aic-hw-version must be one of {HW_VERSIONS}")
    if not values.get("aic-num-cores", "").isdigit():
        fail("-aic-num-cores=N is required")
    for name in ("m", "network-specialization-config", "aic-binary-dir"):
        if name not in values:
            fail(f"-{name}= is required")
    for name in ("m", "network-specialization-config", "custom-IO-list-file", "mdp-load-partition-config"):
        if name in values and not (Path.cwd() / values[name]).exists():
            fail(f"-{name}={values[name]}: no such file")
    io, outputs = onnx_io(Path(values["m"]))
    retained = any(o.endswith("_RetainedState") for o in outputs)
    if retained != ("retained-state" in flags):
        fail("-retained-state must be given exactly when the graph has _RetainedState outputs")
    graphs = check_specializations(Path(values["network-specialization-config"]), io)
    if "custom-IO-list-file" in values:
        check_custom_io(Path(values["custom-IO-list-file"]), io)
    if "mdp-load-partition-config" in values:
        check_mdp(Path(values["mdp-load-partition-config"]), int(values["aic-num-cores"]))
    out = Path(values["aic-binary-dir"])
    if out.exists():
        fail(f"-aic-binary-dir={out} exists already")
    out.mkdir(parents=True)
    digest = hashlib.sha256(Path(values["m"]).read_bytes() + json.dumps(argv).encode()).hexdigest()
    (out / "programqpc.bin").write_text(f"stand-in QPC {digest} graphs={graphs}\n")
    print(f"stand-in qaic-compile: {graphs} graph(s) checked, wrote {out / 'programqpc.bin'}")


if __name__ == "__main__":
    main(sys.argv[1:])
