"""Signed action entries: what a shared cache serves is decided by keys, not by who can write the bucket.

Nix's binary-cache scheme with Ed25519. A writer holds a secret key (``qeffbuild cache keygen NAME``
writes it, mode 0600) and signs every action entry it uploads; consumers list the public keys they
trust (``QEFFBUILD_TRUSTED_KEYS``, or ``trusted_keys`` in a manifest's ``[project]``) and accept a
remote entry only when one of them signed it. An unsigned or badly signed entry is a miss: reported,
never served, and replaced by the next signed upload of that step.

What is signed is the entry's *fingerprint*: its key, step, output names and digests, and the digests
it consumed (canonical JSON). The key is itself the hash of the entry's key material (checked when an
entry is parsed), so a signature binds "these inputs" to "these output bytes". Duration and log tail
are not signed: they are shown, never used.

Keys are written as ``name:base64`` (the public key, or the secret key's 32-byte seed), as Nix writes
them. The secret key is read from a file only; it never enters a manifest, a step key, a log or an
error message.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.hashing import canonical_json
from ..errors import UsageError

FINGERPRINT_VERSION = "qeffbuild-entry-v1"
ENV_SIGNING_KEY = "QEFFBUILD_SIGNING_KEY_FILE"
ENV_TRUSTED = "QEFFBUILD_TRUSTED_KEYS"
ENV_TRUST = "QEFFBUILD_REMOTE_TRUST"  # "signed" (default) or "any": accept unsigned entries (unsafe)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:
        raise UsageError("signed remote caches need the cryptography package: pip install 'qeffbuild[remote]'") from e
    return ed25519


def fingerprint(key: str, step: str, outputs: dict[str, str], consumed: tuple[str, ...] | list[str]) -> bytes:
    return canonical_json({"v": FINGERPRINT_VERSION, "key": key, "step": step, "outputs": outputs,
                           "consumed": sorted(consumed)}).encode()


@dataclass(frozen=True)
class SigningKey:
    """A writer's secret key (never printed: ``repr`` shows the name only)."""

    name: str
    seed: bytes = field(repr=False)

    def sign(self, message: bytes) -> str:
        private = _crypto().Ed25519PrivateKey.from_private_bytes(self.seed)
        return base64.b64encode(private.sign(message)).decode()

    def public(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        private = _crypto().Ed25519PrivateKey.from_private_bytes(self.seed)
        raw: bytes = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return raw

    def public_text(self) -> str:
        return f"{self.name}:{base64.b64encode(self.public()).decode()}"


def generate(name: str) -> SigningKey:
    if not NAME.fullmatch(name):
        raise UsageError(f"key name {name!r}: use letters, digits, '.', '_' and '-' (e.g. ci.example.org-1)")
    return SigningKey(name, os.urandom(32))


def write_secret_key(key: SigningKey, path: Path) -> None:
    """Write ``name:base64(seed)`` readable by its owner only; an existing file is never overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists; a signing key is never overwritten (remove it first, or choose another "
                         "path)") from None
    with os.fdopen(fd, "w") as f:
        f.write(f"{key.name}:{base64.b64encode(key.seed).decode()}\n")


def read_secret_key(path: Path) -> SigningKey:
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise UsageError(f"cannot read the signing key {path} ({e.strerror}); check {ENV_SIGNING_KEY}") from None
    name, seed = _split(text, str(path), 32)
    return SigningKey(name, seed)


def _split(text: str, where: str, size: int) -> tuple[str, bytes]:
    name, sep, b64 = text.partition(":")
    try:
        raw = base64.b64decode(b64, validate=True) if sep else b""
    except (binascii.Error, ValueError):
        raw = b""
    if not NAME.fullmatch(name) or len(raw) != size:
        # the text itself is never echoed: it may be a secret key
        raise UsageError(f"{where}: not a key written as name:base64 ({size} bytes); make one with "
                         "`qeffbuild cache keygen NAME`")
    return name, raw


def parse_public_keys(text: str, where: str) -> dict[str, bytes]:
    """``name:base64`` public keys separated by spaces, commas or newlines."""
    keys: dict[str, bytes] = {}
    for item in re.split(r"[\s,]+", text.strip()):
        if item:
            name, raw = _split(item, where, 32)
            keys[name] = raw
    return keys


@dataclass
class Trust:
    """Who may sign what this build accepts from a remote cache, and the key it signs its uploads with."""

    trusted: dict[str, bytes] = field(default_factory=dict)
    signer: SigningKey | None = None
    require: bool = True

    @classmethod
    def from_settings(cls, project_keys: list[str] | None = None, signing_key: Path | None = None) -> Trust:
        trusted: dict[str, bytes] = {}
        for text in project_keys or []:
            trusted.update(parse_public_keys(text, "[project] trusted_keys"))
        if os.environ.get(ENV_TRUSTED):
            trusted.update(parse_public_keys(os.environ[ENV_TRUSTED], ENV_TRUSTED))
        path = signing_key or (Path(os.environ[ENV_SIGNING_KEY]) if os.environ.get(ENV_SIGNING_KEY) else None)
        signer = read_secret_key(path) if path is not None else None
        if signer is not None:
            trusted.setdefault(signer.name, signer.public())  # a writer trusts what it signed itself
        mode = os.environ.get(ENV_TRUST, "signed").strip().lower()
        if mode not in ("signed", "any"):
            raise UsageError(f"{ENV_TRUST}={mode!r}: use 'signed' (default) or 'any'")
        return cls(trusted, signer, mode == "signed")

    def trusted_keys(self) -> list[str]:
        """The trusted public keys as ``name:base64`` (what a Ray node is told to trust)."""
        import base64

        return [f"{name}:{base64.b64encode(raw).decode()}" for name, raw in sorted(self.trusted.items())]

    def sign(self, key: str, step: str, outputs: dict[str, str], consumed: tuple[str, ...]) -> list[dict[str, str]]:
        if self.signer is None:
            return []
        return [{"key": self.signer.name, "sig": self.signer.sign(fingerprint(key, step, outputs, consumed))}]

    def check(self, key: str, step: str, outputs: dict[str, str], consumed: tuple[str, ...],
              signatures: Any) -> str | None:
        """None when a trusted key signed this entry (or signatures are not required); else why not."""
        if not self.require:
            return None
        if not isinstance(signatures, list) or not signatures:
            return "it is not signed"
        message = fingerprint(key, step, outputs, consumed)
        names = []
        for s in signatures:
            if not isinstance(s, dict) or not isinstance(s.get("key"), str) or not isinstance(s.get("sig"), str):
                continue
            names.append(s["key"][:100])
            public = self.trusted.get(s["key"])
            if public is not None and _valid(public, s["sig"], message):
                return None
        if not names:
            return "its signatures are malformed"
        known = [n for n in names if n in self.trusted]
        if known:
            return f"its signature by {known[0]!r} does not match its content"
        return f"it is signed by {', '.join(repr(n) for n in names)}, which is not a trusted key"


def _valid(public: bytes, sig_b64: str, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        _crypto().Ed25519PublicKey.from_public_bytes(public).verify(base64.b64decode(sig_b64, validate=True), message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
