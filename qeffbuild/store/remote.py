"""A remote cache shared by a team: any fsspec URL (``s3://bucket/prefix``, ``file:///shared/mount``).

Bazel's discipline, on the same layout as the local cache (``cas/<d[:2]>/<digest>`` blobs,
``ac/<k[:2]>/<key>.json`` action entries):

- blobs are uploaded before the entry that names them, so a reader never sees an entry whose
  blobs are missing;
- every download is hashed (blake3) before it enters the local cache; a mismatch is quarantined
  locally and reported, the step is rebuilt, and its re-upload replaces the bad blob;
- the remote is read through into the local cache: a second build on the same machine finds
  everything locally and downloads nothing;
- ``upload=False`` makes a read-only consumer (pull-request CI) that never writes;
- a remote that is unreachable or refuses the credentials is a warning and a local build, unless
  ``required``.

Credentials come from the standard environment of the filesystem (for S3: ``AWS_*`` variables and
``~/.aws``; ``AWS_ENDPOINT_URL`` for an S3-compatible server), never from manifests, and are
never printed: error messages name the URL and the error's type and code only.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import replace
from pathlib import Path

from ..errors import QeffbuildError
from .local import ActionEntry, CorruptEntry, LocalStore, parse_entry
from .signing import Trust

ENV_URL = "QEFFBUILD_REMOTE_CACHE"
ENV_UPLOAD = "QEFFBUILD_REMOTE_UPLOAD"
ENV_REQUIRED = "QEFFBUILD_REMOTE_REQUIRED"
ENV_TIMEOUT = "QEFFBUILD_REMOTE_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0  # the most one remote call may cost: two tries of half as long each
CHUNK = 32 << 20  # download in 32 MiB reads
SECRETISH = re.compile(r"(?i)(secret|token|signature|credential|password|key)(=|%3D)[^&\s]+")


class RemoteCacheError(QeffbuildError):
    """The remote cache is required and cannot be used."""

    exit_code = 1


def _safe(error: BaseException) -> str:
    """An error as a user may see it: its type and a message with anything credential-like removed."""
    text = SECRETISH.sub(r"\1=…", str(error).splitlines()[0] if str(error) else "")[:300]
    text = re.sub(r"[a-z0-9]+://\S+", lambda m: display_url(m.group(0)), text)  # URLs without their query
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class RemoteCache:
    """Read-through, write-behind access to one remote cache for one build."""

    def __init__(self, url: str, local: LocalStore, upload: bool = True, required: bool = False,
                 trust: Trust | None = None) -> None:
        self.url, self.local, self.upload, self.required = url, local, upload, required
        self.shown = display_url(url)  # what messages say: no credentials, no query string
        self.trust = trust if trust is not None else Trust.from_settings()
        self.disabled: str | None = None  # why the remote is off for the rest of this build
        self.bad_blobs: set[str] = set()  # found corrupt remotely: re-uploaded even though they "exist"
        self.counts = {"hits": 0, "misses": 0, "bytes_down": 0, "bytes_up": 0, "uploads": 0, "corrupt": 0,
                       "untrusted": 0}
        self.untrusted: dict[str, str] = {}  # step -> why its remote entry was refused
        self.notes: list[str] = []
        self.timeout_s = _timeout()
        try:
            import fsspec

            self.fs, root = fsspec.core.url_to_fs(url, **_storage_options(url, self.timeout_s))
            if hasattr(self.fs, "retries"):  # s3fs retries 5 times by default, backing off: one retry, bounded
                self.fs.retries = 2
        except ImportError as e:
            raise RemoteCacheError(f"the remote cache {display_url(url)} needs fsspec (and s3fs for s3://): "
                                   "pip install 'qeffbuild[remote]'") from e
        except (ValueError, TypeError) as e:
            raise RemoteCacheError(f"{display_url(url)!r} is not a cache URL fsspec understands ({_safe(e)}); use s3://bucket/"
                                   "prefix or file:///path") from e
        self.root = str(root).rstrip("/")
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.atomic_rename = any(p in ("file", "local") for p in protocols)  # a folder: write, then rename

    # --- paths -----------------------------------------------------------------------------
    def _blob(self, digest: str) -> str:
        return f"{self.root}/cas/{digest[:2]}/{digest}"

    def _entry(self, key: str) -> str:
        return f"{self.root}/ac/{key[:2]}/{key}.json"

    # --- availability ------------------------------------------------------------------------
    def probe(self) -> None:
        """Reach the remote once; unreachable or refused: a note and a local build (or an error if required)."""
        try:
            self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            if self.upload:  # an empty bucket prefix, or a new shared folder: made on first upload
                try:
                    self.fs.mkdirs(self.root, exist_ok=True)
                except Exception as e:
                    self._off(e, "cannot be created")
        except Exception as e:  # network, DNS, credentials, permissions: all mean "build locally"
            self._off(e, "cannot be reached")

    def _off(self, error: BaseException, what: str) -> None:
        reason = f"the remote cache {self.shown} {what} ({_safe(error)})"
        if self.required:
            raise RemoteCacheError(f"{reason}; it is required (--remote-required): fix the URL, the network or the "
                                   "credentials (AWS_* environment, ~/.aws), or drop --remote-required") from None
        self.disabled = reason
        self.notes.append(f"{reason}; building with the local cache only")

    @property
    def active(self) -> bool:
        return self.disabled is None

    # --- read through --------------------------------------------------------------------------
    def fetch(self, key: str) -> ActionEntry | None:
        """The remote's entry for ``key`` with every blob downloaded, verified and in the local cache."""
        if not self.active:
            return None
        try:
            raw = self.fs.cat_file(self._entry(key))
        except FileNotFoundError:
            self.counts["misses"] += 1
            return None
        except Exception as e:
            self._failed(e, "reading")
            return None
        try:
            entry = parse_entry(json.loads(raw), key)
        except (ValueError, CorruptEntry, RecursionError) as e:
            self.counts["corrupt"] += 1
            self.notes.append(f"the remote entry of {key[:12]} is corrupt ({str(e)[:120]}); its step runs here"
                              f"{self._again()}")
            return None
        why = self.trust.check(key, entry.step, entry.outputs, entry.consumed, list(entry.signatures))
        if why is not None:  # never served: a miss, said once per build (see untrusted_note)
            self.counts["untrusted"] += 1
            self.untrusted[entry.step] = why
            return None
        for digest in sorted(set(entry.outputs.values())):
            if self.local.blob_path(digest).exists() and self.local.verify_blob(digest):
                continue
            if not self._download(digest, entry.step):
                return None
        self.local.import_entry(entry)
        self.counts["hits"] += 1
        return entry

    def _download(self, digest: str, step: str) -> bool:
        self.local.ensure_layout()
        tmp = self.local.tmp / f"remote-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            actual = self._stream(self._blob(digest), tmp)
        except FileNotFoundError:
            self.notes.append(f"the remote entry of {step} names blob {digest[:12]}, which the remote does not "
                              f"have; the step runs here{self._again()}")
            self.bad_blobs.add(digest)
            tmp.unlink(missing_ok=True)
            return False
        except Exception as e:
            tmp.unlink(missing_ok=True)
            self._failed(e, "downloading from")
            return False
        size = tmp.stat().st_size
        if not self.local.import_blob(tmp, digest, "remote", actual):
            self.counts["corrupt"] += 1
            self.bad_blobs.add(digest)
            self.notes.append(f"a blob of {step} downloaded from {self.shown} did not match its digest "
                              f"{digest[:12]}; quarantined it in {self.local.quarantine / 'remote'}, the step runs "
                              f"here{' and its upload replaces the bad blob' if self.upload else ''}")
            return False
        self.counts["bytes_down"] += size
        return True

    def _stream(self, source: str, dest: Path) -> str:
        """Download ``source`` to ``dest``, hashing on the way (one pass over the bytes); its blake3."""
        from blake3 import blake3

        hasher = blake3()
        with self.fs.open(source, "rb", block_size=CHUNK, cache_type="none") as src, open(dest, "wb") as out:
            while chunk := src.read(CHUNK):
                hasher.update(chunk)
                out.write(chunk)
        return str(hasher.hexdigest())

    # --- write behind --------------------------------------------------------------------------
    def push(self, entry: ActionEntry) -> None:
        """Upload a step built here: every blob first (unless the remote has it), the entry last, signed with
        this build's key. A blob is hashed before it leaves (a failing disk keeps size, mtime and inode)."""
        if not (self.active and self.upload):
            return
        try:
            for digest in sorted(set(entry.outputs.values())):
                target = self._blob(digest)
                if digest not in self.bad_blobs and self.fs.exists(target):
                    continue
                if not self.local.verify_blob(digest, full=True):
                    self.notes.append(f"a blob of {entry.step} changed on this disk since it was written; it was "
                                      "quarantined and not uploaded (its step runs again next build)")
                    self.local.drop(entry.key)
                    return
                self._put(str(self.local.blob_path(digest)), target)
                self.counts["bytes_up"] += self.local.blob_path(digest).stat().st_size
                self.bad_blobs.discard(digest)
            signed = replace(entry, signatures=tuple(self.trust.sign(entry.key, entry.step, entry.outputs,
                                                                     entry.consumed)))
            data = json.dumps(signed.to_json(), indent=1, sort_keys=True).encode()
            self._pipe(self._entry(entry.key), data)
            self.counts["uploads"] += 1
        except Exception as e:
            self._failed(e, "uploading to")

    def _put(self, local_path: str, target: str) -> None:
        parent = target.rsplit("/", 1)[0]
        if self.atomic_rename:  # a shared folder: readers must never see half a blob
            self.fs.mkdirs(parent, exist_ok=True)
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            self.fs.put_file(local_path, tmp)
            self.fs.mv(tmp, target)
        else:  # object stores publish an object whole
            self.fs.put_file(local_path, target)

    def _pipe(self, target: str, data: bytes) -> None:
        parent = target.rsplit("/", 1)[0]
        if self.atomic_rename:
            self.fs.mkdirs(parent, exist_ok=True)
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, target)
        else:
            self.fs.pipe_file(target, data)

    def _again(self) -> str:
        return " and is uploaded again" if self.upload else ""

    def trust_notes(self) -> list[str]:
        """What this build refused from the remote, and what it uploaded unsigned: said once, at the end."""
        out = []
        if self.untrusted:
            steps = sorted(self.untrusted)
            shown = ", ".join(f"{s} ({self.untrusted[s]})" for s in steps[:3])
            more = f" and {len(steps) - 3} more" if len(steps) > 3 else ""
            hint = (" No key is trusted: set QEFFBUILD_TRUSTED_KEYS to the writers' public keys (`qeffbuild cache "
                    "keygen` prints one)." if not self.trust.trusted else "")
            out.append(f"ignored {len(steps)} entr{'y' if len(steps) == 1 else 'ies'} of the remote cache {self.shown} "
                       f"not signed by a trusted key: {shown}{more}; built here instead.{hint}")
        n = self.counts["uploads"]
        if n and self.trust.signer is None and self.trust.require:
            out.append(f"uploaded {n} unsigned entr{'y' if n == 1 else 'ies'} to {self.shown}: consumers that "
                       "require signatures ignore them; set QEFFBUILD_SIGNING_KEY_FILE to a key from `qeffbuild "
                       "cache keygen`")
        return out

    def _failed(self, error: BaseException, what: str) -> None:
        reason = f"{what} the remote cache {self.shown} failed ({_safe(error)})"
        if self.required:
            raise RemoteCacheError(f"{reason}; it is required (--remote-required)") from None
        self.disabled = reason
        self.notes.append(f"{reason}; the rest of this build uses the local cache only")

    def record(self) -> None:
        """Add this build's counts to the cache's totals (shown by `qeffbuild cache stats`)."""
        self.local.state.add_counters({f"remote.{k}": v for k, v in self.counts.items()}, self.shown, time.time())


def _timeout() -> float:
    raw = os.environ.get(ENV_TIMEOUT, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise RemoteCacheError(f"{ENV_TIMEOUT}={raw!r}: give the seconds one remote call may take (0 < s <= 3600)")
    return value


def _storage_options(url: str, timeout_s: float) -> dict[str, object]:
    """Connect and read timeouts, and no retries of botocore's own (s3fs retries once): a server that stops
    answering (its port still accepting) costs at most ``timeout_s``, then this build goes on without it."""
    if not url.startswith(("s3://", "s3a://")):
        return {}
    per_try = timeout_s / 2
    return {"config_kwargs": {"connect_timeout": per_try, "read_timeout": per_try,
                              "retries": {"total_max_attempts": 1, "mode": "standard"}}}


def display_url(url: str) -> str:
    """A cache URL as messages show it: no user or password, and no query string (where credentials and
    signatures hide, URL-encoded or not)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a remote cache URL that does not parse>"
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "…" if parts.query else "", ""))


def from_settings(local: LocalStore, url: str | None, upload: bool | None, required: bool | None,
                  trust: Trust | None = None) -> RemoteCache | None:
    """The remote cache from CLI options, else the environment (``QEFFBUILD_REMOTE_CACHE`` …); None when unset."""
    url = url or os.environ.get(ENV_URL) or None
    if not url:
        return None
    if upload is None:
        upload = os.environ.get(ENV_UPLOAD, "1").lower() not in ("0", "false", "no", "off")
    if required is None:
        required = os.environ.get(ENV_REQUIRED, "0").lower() in ("1", "true", "yes", "on")
    cache = RemoteCache(url, local, upload, required, trust)
    cache.probe()
    return cache


def local_path_of(url: str) -> Path | None:
    """The folder of a ``file://`` URL (tests and docs)."""
    return Path(url[len("file://"):]) if url.startswith("file://") else None
