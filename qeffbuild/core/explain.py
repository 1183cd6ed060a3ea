"""Why a step must run, as data: reason codes with details, rendered to text only at the edge.

``plan --json`` and ``explain --json`` give the codes; the terminal shows their text.

    new                never built (no earlier key for this step)
    forced             ``build --force`` named its target
    outputs_missing    cached, but its outputs are gone or corrupt
    entry_gone         its last build's cache entry was removed (gc, verify)
    version_changed    qeffbuild changed how the step runs
    kind_changed       the step became another kind of step
    param_added / param_removed / param_changed           a parameter (dotted path)
    input_file_added / input_file_removed / input_file_changed
    upstream_added / upstream_removed / upstream_changed  an upstream step's key
    toolchain_changed  a library or tool version
    salt_changed       the project's salt
    same_material      same key material as before, yet no entry (another cache, or a removed entry)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass(frozen=True)
class Reason:
    code: str
    detail: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, code: str, **detail: Any) -> Reason:
        return cls(code, tuple(detail.items()))

    @property
    def fields(self) -> dict[str, Any]:
        return dict(self.detail)

    def text(self) -> str:
        d = self.fields
        return _TEXT[self.code](d)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, **self.fields, "text": self.text()}


def _upstream(d: dict[str, Any]) -> str:
    who = f" ({d['step']})" if d.get("step") else ""
    return f"input {d['role']}{who}"


_TEXT: dict[str, Any] = {
    "new": lambda d: "never built",
    "forced": lambda d: "forced (--force)",
    "outputs_missing": lambda d: f"its cached outputs were missing or corrupt{': ' + d['why'] if d.get('why') else ''}",
    "entry_gone": lambda d: "not in the cache (the entry of its last build was removed by `cache gc` or "
                            "`cache verify`)",
    "version_changed": lambda d: f"step version changed: {d['old']} → {d['new']} (qeffbuild changed how it runs)",
    "kind_changed": lambda d: f"step kind changed: {d['old']} → {d['new']}",
    "param_added": lambda d: f"param {d['path']} added: {_short(d['new'])}",
    "param_removed": lambda d: f"param {d['path']} removed (was {_short(d['old'])})",
    "param_changed": lambda d: f"param {d['path']} changed: {_short(d['old'])} → {_short(d['new'])}",
    "input_file_added": lambda d: f"input file {d['label']} added",
    "input_file_removed": lambda d: f"input file {d['label']} removed",
    "input_file_changed": lambda d: f"input file {d['label']} changed: content {d['old'][:12]} → {d['new'][:12]}",
    "upstream_added": lambda d: f"{_upstream(d)} added",
    "upstream_removed": lambda d: f"{_upstream(d)} removed",
    "upstream_changed": lambda d: f"{_upstream(d)} changed: upstream key {d['old'][:12]} → {d['new'][:12]}",
    "toolchain_changed": lambda d: f"toolchain {d['tool']} changed: {d['old']} → {d['new']}",
    "salt_changed": lambda d: f"project salt changed: {_short(d['old'])} → {_short(d['new'])}",
    "same_material": lambda d: "same key material as the last build, but the cache entry is missing",
}
CODES = tuple(_TEXT)


def diff_material(old: dict[str, Any], new: dict[str, Any], upstream: dict[str, str] | None = None) -> list[Reason]:
    """One reason per changed component: params, a file, an upstream step, toolchain, version, salt."""
    out: list[Reason] = []
    if old.get("kind") != new.get("kind"):
        out.append(Reason.of("kind_changed", old=old.get("kind"), new=new.get("kind")))
    if old.get("version") != new.get("version"):
        out.append(Reason.of("version_changed", old=old.get("version"), new=new.get("version")))
    out += _diff_tree(old.get("params", {}), new.get("params", {}))
    out += _diff_pairs(old.get("files", {}), new.get("files", {}), "input_file", "label")
    upstream = upstream or {}
    for role in sorted(set(old.get("deps", {})) | set(new.get("deps", {}))):
        a, b = old.get("deps", {}).get(role), new.get("deps", {}).get(role)
        if a != b:
            code = "upstream_added" if a is None else "upstream_removed" if b is None else "upstream_changed"
            out.append(Reason.of(code, role=role, step=upstream.get(role), old=a, new=b))
    for tool in sorted(set(old.get("toolchain", {})) | set(new.get("toolchain", {}))):
        a, b = old.get("toolchain", {}).get(tool), new.get("toolchain", {}).get(tool)
        if a != b:
            out.append(Reason.of("toolchain_changed", tool=tool, old=a, new=b))
    if old.get("salt") != new.get("salt"):
        out.append(Reason.of("salt_changed", old=old.get("salt"), new=new.get("salt")))
    return out


def _diff_tree(old: Any, new: Any, path: str = "") -> list[Reason]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[Reason] = []
        for k in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in old:
                out.append(Reason.of("param_added", path=sub, new=new[k]))
            elif k not in new:
                out.append(Reason.of("param_removed", path=sub, old=old[k]))
            else:
                out += _diff_tree(old[k], new[k], sub)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [r for i, (a, b) in enumerate(zip(old, new, strict=True)) for r in _diff_tree(a, b, f"{path}[{i}]")]
    if old != new:
        return [Reason.of("param_changed", path=path, old=old, new=new)]
    return []


def _diff_pairs(old: dict[str, str], new: dict[str, str], prefix: str, name: str) -> list[Reason]:
    out: list[Reason] = []
    for label in sorted(set(old) | set(new)):
        a, b = old.get(label), new.get(label)
        if a == b:
            continue
        code = f"{prefix}_added" if a is None else f"{prefix}_removed" if b is None else f"{prefix}_changed"
        out.append(Reason.of(code, **{name: label, "old": a, "new": b}))
    return out


def reasons(previous_material: dict[str, Any] | None, had_previous: bool, material: dict[str, Any],
            upstream: dict[str, str] | None = None) -> list[Reason]:
    """Why a step with ``material`` is not cached, given what its previous build's entry held."""
    if not had_previous:
        return [Reason.of("new")]
    if previous_material is None:
        return [Reason.of("entry_gone")]
    return diff_material(previous_material, material, upstream) or [Reason.of("same_material")]
