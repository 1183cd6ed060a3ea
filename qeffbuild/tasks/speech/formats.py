"""How `qeffbuild run` shows transcripts (torch-free): plain text, or subtitles (SRT, WebVTT) from the segments.

A row is what the family's ``run`` returns: ``input``, ``text``, ``segments`` ([{start, end, text}], seconds),
``method``, ``notes`` and ``truncated``. Control characters a model emits are escaped for the terminal in text
form; subtitles keep the text as it is (they are files).
"""

from __future__ import annotations

from typing import Any

FORMATS = ("text", "json", "srt", "vtt")
SUBTITLES = ("srt", "vtt")


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt(segments: list[dict[str, Any]]) -> str:
    """SubRip: numbered cues ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, a blank line after each."""
    cues = [f"{k}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{_cue_text(s['text'])}\n"
            for k, s in enumerate(_spoken(segments), 1)]
    return "\n".join(cues)


def vtt(segments: list[dict[str, Any]]) -> str:
    """WebVTT: the ``WEBVTT`` header, then cues ``HH:MM:SS.mmm --> HH:MM:SS.mmm``."""
    cues = [f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{_cue_text(s['text'])}\n"
            for s in _spoken(segments)]
    return "WEBVTT\n\n" + "\n".join(cues)


def _spoken(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in segments if str(s.get("text", "")).strip()]


def _cue_text(text: str) -> str:
    """A cue's text on its lines: no blank line inside it (it would end the cue), no "-->"."""
    return "\n".join(line for line in text.strip().replace("-->", "->").splitlines() if line.strip())


def render(rows: list[dict[str, Any]], fmt: str) -> list[str]:
    """One rendering per row (subtitles need a file each); text is one line per row."""
    if fmt == "srt":
        return [srt(r["segments"]) for r in rows]
    if fmt == "vtt":
        return [vtt(r["segments"]) for r in rows]
    from ...reports import printable

    return [f"{printable(r['input'])}: {printable(r['text'])}" for r in rows]
