"""Why a step's key changed: a readable diff of two key materials."""

from __future__ import annotations

from typing import Any

from .store import Store


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def diff_material(old: dict[str, Any], new: dict[str, Any], upstream: dict[str, str] | None = None) -> list[str]:
    """One line per changed component: params, a file, an upstream step, toolchain, version, salt."""
    out: list[str] = []
    if old.get("kind") != new.get("kind"):
        out.append(f"step kind changed: {old.get('kind')} → {new.get('kind')}")
    if old.get("version") != new.get("version"):
        out.append(f"step version changed: {old.get('version')} → {new.get('version')} (qeffbuild changed how it runs)")
    out += _diff_tree("param", old.get("params", {}), new.get("params", {}))
    out += _diff_files(old.get("files", {}), new.get("files", {}))
    for role in sorted(set(old.get("deps", {})) | set(new.get("deps", {}))):
        a, b = old.get("deps", {}).get(role), new.get("deps", {}).get(role)
        if a != b:
            who = f" ({upstream[role]})" if upstream and role in upstream else ""
            if a is None or b is None:
                out.append(f"input {role}{who} {'added' if a is None else 'removed'}")
            else:
                out.append(f"input {role}{who} changed: upstream key {a[:12]} → {b[:12]}")
    for dist in sorted(set(old.get("toolchain", {})) | set(new.get("toolchain", {}))):
        a, b = old.get("toolchain", {}).get(dist), new.get("toolchain", {}).get(dist)
        if a != b:
            out.append(f"toolchain {dist} changed: {a} → {b}")
    if old.get("salt") != new.get("salt"):
        out.append(f"project salt changed: {_short(old.get('salt'))} → {_short(new.get('salt'))}")
    return out


def _diff_tree(prefix: str, old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            sub = f"{path}.{k}" if path else str(k)
            if k not in old:
                out.append(f"{prefix} {sub} added: {_short(new[k])}")
            elif k not in new:
                out.append(f"{prefix} {sub} removed (was {_short(old[k])})")
            else:
                out += _diff_tree(prefix, old[k], new[k], sub)
        return out
    if old != new:
        return [f"{prefix} {path} changed: {_short(old)} → {_short(new)}"]
    return []


def _diff_files(old: dict[str, str], new: dict[str, str]) -> list[str]:
    out: list[str] = []
    for label in sorted(set(old) | set(new)):
        a, b = old.get(label), new.get(label)
        if a == b:
            continue
        if a is None:
            out.append(f"input file {label} added")
        elif b is None:
            out.append(f"input file {label} removed")
        else:
            out.append(f"input file {label} changed: content {a[:12]} → {b[:12]}")
    return out


def reason(store: Store, previous_key: str | None, material: dict[str, Any],
           upstream: dict[str, str] | None = None) -> list[str]:
    """Why a step with ``material`` is not cached, given the key of its previous build."""
    if previous_key is None:
        return ["never built"]
    entry = store.lookup(previous_key)
    if entry is None:
        return ["not in the cache (the entry of its last build was removed by `cache gc` or `cache verify`)"]
    changes = diff_material(entry.material, material, upstream)
    return changes or ["same key material as the last build, but the cache entry is missing"]
