"""An audio validation's inputs: a folder of audio, a CSV/JSONL table, an audiofolder or a saved `datasets` dataset.

Plan time (torch-free, no `datasets` import) resolves what it can: for a folder, a table and an
audiofolder it reads the rows (stdlib csv/json), checks each selected row's file (present, audio
soundfile can read) and its text, and turns the selection into the step's params and input
files, so the key follows the content through the stat cache and a bad row is a located error
before anything runs. A dataset saved with ``save_to_disk`` is keyed by its files and opened by
the worker with ``datasets.load_from_disk`` (its audio is decoded by soundfile: the `datasets`
Audio feature needs torchcodec, which has no CPU build for this torch).

Selection is the same for every kind: rows in order (or shuffled with ``shuffle_seed``), rows
longer than ``max_duration_s`` skipped, the first ``limit`` kept.
"""

from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..core.steps import FileInput
from ..core.tables import ValidationBase

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus", ".w64")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
TEXT_COLUMNS = ("text", "transcription", "sentence", "transcript")  # the default, first present
HF_MARKERS = ("dataset_info.json", "dataset_dict.json")


class AudioValidation(ValidationBase):
    """The fields of a validation that reads audio with transcripts (every family that hears adds its own)."""

    inputs: str = Field(description="A folder of audio files (optional .txt transcripts beside them), a CSV/TSV or "
                                    "JSONL table (path and text columns, paths relative to it), an audiofolder "
                                    "(metadata.csv with file_name) or a dataset saved with datasets' save_to_disk.")
    split: str | None = Field(None, description="Audiofolders and saved data sets: the split to read.")
    audio_column: str | None = Field(None, description="The audio column (default: path in tables, file_name in "
                                                       "audiofolders, audio in saved data sets).")
    text_column: str | None = Field(None, description="The transcripts' column (default: the first of text, "
                                                      "transcription, sentence, transcript).")
    max_duration_s: float | None = Field(None, gt=0, le=36000, description="Skip rows longer than this.")
    limit: int | None = Field(None, ge=1, description="Read at most this many rows (after shuffling).")
    shuffle_seed: int | None = Field(None, ge=0, lt=2**32, description="Shuffle the rows with this seed first.")
    normalizer: Literal["whisper-english", "whisper-basic", "simple"] | None = Field(
        None, description="Text normalization before WER/CER (default: whisper-english for English, else "
                          "whisper-basic).")


class DataError(Exception):
    """A problem with the inputs, located at a key of the validation table (``inputs``, ``text_column`` …)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Selection:
    """What a validation reads: its kind, the selected rows (all but `hf`), the files in its key."""

    kind: str  # folder | table | audiofolder | hf
    rows: list[dict[str, Any]] = field(default_factory=list)  # {"name", "label", "text", "seconds"}
    files: tuple[FileInput, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # what the worker needs (hf: how to open it)
    paths: dict[str, Path] = field(default_factory=dict)  # where the worker reads (not keyed)

    @property
    def has_text(self) -> bool | None:
        """Whether every row has a transcript (None: known only when the worker opens the dataset)."""
        if self.kind == "hf":
            return None
        return all(r["text"] for r in self.rows)


def kind_of(path: Path) -> str:
    if path.is_dir():
        if any((path / m).is_file() for m in HF_MARKERS):
            return "hf"
        if _metadata_files(path):
            return "audiofolder"
        return "folder"
    if path.suffix.lower() in TABLE_SUFFIXES:
        return "table"
    raise DataError("inputs", f"{path.name} is neither a folder nor a .csv/.tsv/.jsonl table; give a folder of "
                              "audio, a table with path and text columns, an audiofolder or a saved dataset")


def select(v: Any, root: Path) -> Selection:
    """Resolve validation ``v``'s inputs (relative to ``root``, the manifest's folder)."""
    path = root / v.inputs
    try:
        path.stat()
    except FileNotFoundError:
        pass
    except OSError as e:  # a name the file system refuses (too long, a loop, …)
        raise DataError("inputs", f"cannot use {v.inputs[:80]!r}: {e.strerror}; point inputs at a folder of audio, "
                                  "a CSV/JSONL table, an audiofolder or a saved dataset") from None
    if not path.exists():
        raise DataError("inputs", f"{v.inputs!r} does not exist (relative to {root}); make it, or point inputs at "
                                  "a folder of audio, a CSV/JSONL table, an audiofolder or a saved dataset")
    kind = kind_of(path)
    if kind == "folder":
        for key in ("split", "audio_column", "text_column"):
            if getattr(v, key) is not None:
                raise DataError(key, f"{key} applies to tables and data sets; {v.inputs!r} is a folder of audio")
        rows = _folder_rows(path, v.inputs)
    elif kind == "table":
        if v.split is not None:
            raise DataError("split", "split applies to audiofolders and saved data sets, not to a table")
        rows = _table_rows(path, v.audio_column or "path", v.text_column, os.path.dirname(v.inputs))
    elif kind == "audiofolder":
        rows = _audiofolder_rows(path, v.inputs, v.split, v.audio_column or "file_name", v.text_column)
    else:
        return _hf_selection(path, v)
    chosen = _choose(rows, v.max_duration_s, v.limit, v.shuffle_seed, v.inputs)
    files = [FileInput(r["label"], r["path"]) for r in chosen]
    files += [FileInput(os.path.splitext(r["label"])[0] + ".txt", r["transcript"])
              for r in chosen if r.get("transcript")]
    if kind != "folder":  # the table itself: its text is part of what is validated
        table = chosen[0]["table_path"]
        files.append(FileInput(os.path.normpath(os.path.join(v.inputs, os.path.relpath(table, path)))
                               if kind == "audiofolder" else v.inputs, table))
    rows_out = [{"name": r["name"], "label": r["label"], "text": r["text"], "seconds": round(r["seconds"], 4)}
                for r in chosen]
    return Selection(kind, rows_out, tuple(dict.fromkeys(files)), {"kind": kind})


# --- each kind's rows ---------------------------------------------------------------------------


def _folder_rows(folder: Path, rel: str) -> list[dict[str, Any]]:
    rows = []
    for p in sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES),
                    key=lambda p: p.name):
        txt = p.with_suffix(".txt")
        rows.append({"name": p.name, "label": f"{rel}/{p.name}", "path": p, "where": p.name,
                     "text": txt.read_text().strip() if txt.is_file() else None,
                     "transcript": txt if txt.is_file() else None})
    if not rows:
        raise DataError("inputs", f"{rel!r} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return rows


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """(columns, [(line number, row)]) of a CSV/TSV (header line first) or JSONL (one object a line)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError("inputs", f"{path.name}: cannot read it as UTF-8 text ({e})") from e
    if path.suffix.lower() in (".jsonl", ".json"):
        rows: list[tuple[int, dict[str, Any]]] = []
        seen: dict[str, None] = {}
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise DataError("inputs", f"{path.name} line {n}: not a JSON object ({e})") from e
            if not isinstance(obj, dict):
                raise DataError("inputs", f"{path.name} line {n}: expected a JSON object, got {type(obj).__name__}")
            seen.update(dict.fromkeys(obj))
            rows.append((n, obj))
        return list(seen), rows
    reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    columns = list(reader.fieldnames or [])
    return columns, [(reader.line_num, row) for row in reader]


def _table_rows(path: Path, audio_column: str, text_column: str | None, base_label: str,
                split: str | None = None) -> list[dict[str, Any]]:
    """A table's rows; audio paths are relative to the table's folder (``base_label``, as labelled in keys)."""
    columns, rows = _read_table(path)
    if not rows:
        raise DataError("inputs", f"{path.name} has no rows: the data set is empty")
    if audio_column not in columns:
        raise DataError("audio_column", f"{path.name} has no column {audio_column!r} (its columns: "
                                        f"{', '.join(columns)}); set audio_column to the one naming the audio files")
    text_col = _text_column(columns, text_column, path.name)
    out = []
    for line, row in rows:
        value = row.get(audio_column)
        where = f"{path.name} line {line}"
        if not isinstance(value, str) or not value.strip():
            raise DataError("inputs", f"{where}: column {audio_column!r} is empty; every row names an audio file")
        text = row.get(text_col)
        if text is not None and not isinstance(text, str):
            raise DataError("text_column", f"{where}: column {text_col!r} holds {type(text).__name__}, not text")
        out.append({"name": (f"{split}/" if split else "") + value, "path": path.parent / value,
                    "label": os.path.normpath(os.path.join(base_label, value)),
                    "where": f"{where} ({value if len(value) <= 80 else value[:79] + '…'})",
                    "text": (text or "").strip(), "table_path": path})
    return out


def _text_column(columns: list[str], asked: str | None, name: str) -> str:
    if asked is not None:
        if asked not in columns:
            raise DataError("text_column", f"{name} has no column {asked!r} (its columns: {', '.join(columns)}); "
                                           "set text_column to the transcripts' column")
        return asked
    found = next((c for c in TEXT_COLUMNS if c in columns), None)
    if found is None:
        raise DataError("text_column", f"{name} has no transcript column ({' or '.join(TEXT_COLUMNS)}; its columns: "
                                       f"{', '.join(columns)}); set text_column")
    return found


def _metadata_files(folder: Path) -> dict[str, Path]:
    """An audiofolder's metadata per split: metadata.csv/jsonl at the top ("train") or in split folders."""
    out = {}
    for name in ("metadata.csv", "metadata.jsonl"):
        if (folder / name).is_file():
            out["train"] = folder / name
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        for name in ("metadata.csv", "metadata.jsonl"):
            if (sub / name).is_file():
                out[sub.name] = sub / name
    return out


def _audiofolder_rows(folder: Path, rel: str, split: str | None, audio_column: str,
                      text_column: str | None) -> list[dict[str, Any]]:
    splits = _metadata_files(folder)
    if split is None:
        if len(splits) > 1:
            raise DataError("split", f"{rel!r} has splits {', '.join(splits)}; choose one with split = \"…\"")
        split = next(iter(splits))
    if split not in splits:
        raise DataError("split", f"{rel!r} has no split {split!r} (it has {', '.join(splits)})")
    meta = splits[split]
    base = os.path.normpath(os.path.join(rel, os.path.relpath(meta.parent, folder)))
    return _table_rows(meta, audio_column, text_column, base, split if len(splits) > 1 else None)


def _choose(rows: list[dict[str, Any]], max_s: float | None, limit: int | None, seed: int | None,
            rel: str) -> list[dict[str, Any]]:
    """Rows in order (shuffled by ``seed``), each checked as it is taken; longer than ``max_s`` skipped."""
    order = list(range(len(rows)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    chosen, skipped = [], 0
    for i in order:
        r = rows[i]
        check_audio_file(r["path"], r["where"])
        frames, rate = audio_info(r["path"], r["where"])
        if frames <= 0 or rate <= 0:
            raise DataError("inputs", f"{r['where']}: the audio is empty")
        seconds = frames / rate
        if max_s is not None and seconds > max_s:
            skipped += 1
            continue
        chosen.append({**r, "seconds": seconds})
        if limit is not None and len(chosen) >= limit:
            break
    if not chosen:
        raise DataError("max_duration_s" if skipped else "inputs",
                        f"no row of {rel!r} is at most {max_s:g} s long ({skipped} skipped); raise max_duration_s"
                        if skipped else f"{rel!r} has no rows: the data set is empty")
    return chosen


def check_audio_file(path: Path, where: str, fix: str = "fix the path (relative to the table) or remove the row",
                     drop: str = "remove the row") -> None:
    """A row's file must be a regular file: a missing one, a name the file system refuses, a FIFO or a device
    (reading ``/dev/zero`` never ends) is a DataError naming the row and the fix."""
    import errno
    import stat as stat_module

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError("inputs", f"{where}: {str(path)[:200]} does not exist; {fix}") from None
    except OSError as e:
        reason = "its name is too long for the file system" if e.errno == errno.ENAMETOOLONG else e.strerror
        raise DataError("inputs", f"{where}: cannot read it ({reason}); {fix}") from None
    if not stat_module.S_ISREG(mode):
        kind = ("a folder" if stat_module.S_ISDIR(mode) else "a FIFO" if stat_module.S_ISFIFO(mode)
                else "a device" if stat_module.S_ISCHR(mode) or stat_module.S_ISBLK(mode) else "a socket")
        raise DataError("inputs", f"{where}: {str(path)[:200]} is {kind}, not an audio file; name an audio file "
                                  f"or {drop}")


def audio_info(path: Path, where: str) -> tuple[int, int]:
    """(frames, sample rate) of an audio file. PCM WAV is read by the standard library's header parser: a plan
    (every no-op build) stats its inputs without importing numpy and soundfile; other formats ask soundfile."""
    import wave

    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes(), w.getframerate()
    except (wave.Error, EOFError, OSError):
        pass
    import soundfile

    try:
        info = soundfile.info(str(path))
    except Exception as e:  # soundfile raises its own error types, and RuntimeError for some formats
        raise DataError("inputs", f"{where}: not audio soundfile can read ({e}); convert it (WAV, FLAC, "
                                  "OGG, MP3) or remove the row") from e
    return int(info.frames), int(info.samplerate)


# --- saved `datasets` datasets (opened by the worker) ----------------------------------------------


def _hf_columns(folder: Path, split: str | None) -> list[str] | None:
    """A saved dataset's columns from the JSON ``save_to_disk`` writes beside its Arrow files (``dataset_info.json``,
    and ``dataset_dict.json`` naming the splits): read at plan time without importing ``datasets``. None where
    that JSON is missing, unreadable or names no single split: the worker opens the data set and says why."""
    try:
        splits_file = folder / "dataset_dict.json"
        if splits_file.is_file():
            splits = json.loads(splits_file.read_text())["splits"]
            chosen = split or (splits[0] if len(splits) == 1 else None)
            if chosen is None or chosen not in splits:
                return None
            folder = folder / chosen
        features = json.loads((folder / "dataset_info.json").read_text())["features"]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return list(features) if isinstance(features, dict) else None


def _check_hf_columns(folder: Path, v: Any) -> None:
    """The audio and text columns exist, at plan time: nothing is built for a data set the validation cannot
    read (the worker checks again, for what this could not see)."""
    columns = _hf_columns(folder, v.split)
    if columns is None:
        return
    audio = v.audio_column or "audio"
    if audio not in columns:
        raise DataError("audio_column", f"{v.inputs} has no column {audio!r} (its columns: {', '.join(columns)}); "
                                        "set audio_column")
    text = v.text_column or next((c for c in TEXT_COLUMNS if c in columns), None)
    if text is None or text not in columns:
        raise DataError("text_column", f"{v.inputs} has no column {text or ' or '.join(TEXT_COLUMNS)!r} for the "
                                       f"transcripts (its columns: {', '.join(columns)}); set text_column")


def _hf_selection(folder: Path, v: Any) -> Selection:
    _check_hf_columns(folder, v)
    files = tuple(FileInput(f"{v.inputs}/{p.relative_to(folder).as_posix()}", p)
                  for p in sorted(folder.rglob("*")) if p.is_file())
    params = {"kind": "hf", "split": v.split, "audio_column": v.audio_column or "audio",
              "text_column": v.text_column, "limit": v.limit, "shuffle_seed": v.shuffle_seed,
              "max_duration_s": v.max_duration_s, "inputs": v.inputs}
    return Selection("hf", [], files, params, {"dataset": folder})


def open_hf(folder: Path, params: dict[str, Any]) -> list[tuple[str, Any, str | None]]:
    """Worker side: a saved dataset's selected rows as (name, float32 16 kHz audio, text), located errors."""
    import io

    import datasets
    import numpy as np

    from ..errors import InputError
    from .audio import decode_audio

    rel = params["inputs"]
    try:
        data = datasets.load_from_disk(str(folder))
    except Exception as e:
        raise InputError(f"{rel}: `datasets` cannot open it ({type(e).__name__}: {e})") from e
    split = params["split"]
    if isinstance(data, datasets.DatasetDict):
        if split is None and len(data) != 1:
            raise InputError(f"{rel} has splits {', '.join(data)}; choose one with split = \"…\" in the validation")
        split = split or next(iter(data))
        if split not in data:
            raise InputError(f"{rel} has no split {split!r} (it has {', '.join(data)}); fix split")
        data = data[split]
    elif split is not None:
        raise InputError(f"{rel} is a single dataset with no splits; remove split = {split!r}")
    columns = list(data.column_names)
    audio_col = params["audio_column"]
    if audio_col not in columns:
        raise InputError(f"{rel} has no column {audio_col!r} (its columns: {', '.join(columns)}); set audio_column")
    text_col = params["text_column"] or next((c for c in TEXT_COLUMNS if c in columns), None)
    if text_col is None or text_col not in columns:
        raise InputError(f"{rel} has no column {text_col or ' or '.join(TEXT_COLUMNS)!r} for the transcripts (its "
                         f"columns: {', '.join(columns)}); set text_column")
    if len(data) == 0:
        raise InputError(f"{rel}{f' split {split}' if split else ''} has no rows: the data set is empty")
    if isinstance(data.features.get(audio_col), datasets.Audio):
        data = data.cast_column(audio_col, datasets.Audio(decode=False))
    order = list(range(len(data)))
    if params["shuffle_seed"] is not None:
        random.Random(params["shuffle_seed"]).shuffle(order)
    out: list[tuple[str, Any, str | None]] = []
    skipped = 0
    max_s, limit = params["max_duration_s"], params["limit"]
    for i in order:
        row = data[i]
        name = f"{split or 'rows'}[{i}]"
        value, text = row[audio_col], row[text_col]
        if isinstance(value, dict) and value.get("bytes"):
            source: Any = io.BytesIO(value["bytes"])
        elif isinstance(value, dict) and value.get("path"):
            source = Path(value["path"]) if Path(value["path"]).is_absolute() else folder / value["path"]
        elif isinstance(value, str):
            source = folder / value
        else:
            raise InputError(f"{rel} row {i}: column {audio_col!r} holds no audio (neither bytes nor a path)")
        if text is not None and not isinstance(text, str):
            raise InputError(f"{rel} row {i}: column {text_col!r} holds {type(text).__name__}, not text")
        audio, _note = decode_audio(source, f"{rel} row {i}")
        if max_s is not None and len(audio) / 16000 > max_s:
            skipped += 1
            continue
        out.append((name, np.asarray(audio, np.float32), (text or "").strip()))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise InputError(f"no row of {rel} is at most {max_s:g} s long ({skipped} skipped); raise max_duration_s")
    return out
