"""Make the generated evaluation set: 32 utterances spoken by espeak-ng, resampled by sox (not committed),
and long recordings of many sentences for long-form transcription.

    python scripts/make_eval_set.py [OUT]        # default: manifests/data/eval

Writes OUT/clips/NN.wav (16 kHz mono, 1–5 s, four voices at three speeds), OUT/eval.csv and
OUT/eval.jsonl (columns ``path`` and ``text``, paths relative to the file), and OUT/long/NN.wav with
OUT/long.csv: two recordings of 45–80 s, each many sentences in one voice with short pauses between
them (what meetings and lectures are to a 30 s model window). The same text and settings give the
same audio, so its digest (and the keys of the validations that read it) are stable on one machine.
Needs espeak-ng and sox (``sh scripts/system-deps.sh``).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SENTENCES = [
    "the cat sat on the mat", "please call stella", "ask her to bring these things with her from the store",
    "six spoons of fresh snow peas", "five thick slabs of blue cheese", "we also need a small plastic snake",
    "a big toy frog for the kids", "she can scoop these things into three red bags", "the birch canoe slid on the "
    "smooth planks", "glue the sheet to the dark blue background", "it is easy to tell the depth of a well",
    "these days a chicken leg is a rare dish", "rice is often served in round bowls", "the juice of lemons makes "
    "fine punch", "the box was thrown beside the parked truck", "four hours of steady work faced us",
    "a large size in stockings is hard to sell", "the boy was there when the sun rose", "a rod is used to catch "
    "pink salmon", "the source of the huge river is the clear spring", "kick the ball straight and follow through",
    "help the woman get back to her feet", "a pot of tea helps to pass the evening", "smoky fires lack flame and "
    "heat", "the soft cushion broke the man's fall", "the salt breeze came across from the sea",
    "the girl at the booth sold fifty bonds", "the small pup gnawed a hole in the sock", "the fish twisted and "
    "turned on the bent hook", "press the pants and sew a button on the vest", "the swan dive was far short of "
    "perfect", "the beauty of the view stunned the young boy",
]
VOICES = ["en-us", "en-gb", "en-us+m3", "en-gb+f2"]
SPEEDS = [150, 170, 190]


def make(out: Path) -> None:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: run `sh scripts/system-deps.sh` (apt: espeak-ng sox)")
    clips = out / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(SENTENCES):
        name = f"clips/{i:02d}.wav"
        voice, speed = VOICES[i % len(VOICES)], SPEEDS[i % len(SPEEDS)]
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
            subprocess.run(["sox", "-D", "-V1", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out / name)],
                           check=True)
        rows.append({"path": name, "text": text})
    with open(out / "eval.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "text"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    long_rows = make_long(out)
    print(f"{len(rows)} utterances and {len(long_rows)} long recordings in {out}")


LONG = [  # (voice, speed, sentence indices): about 48 s and 75 s
    ("en-us", 160, list(range(0, 18))),
    ("en-gb", 150, list(range(8, 32))),
]


def make_long(out: Path) -> list[dict[str, str]]:
    """Long recordings: sentences spoken one by one and joined with 0.4 s of silence."""
    folder = out / "long"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (voice, speed, picks) in enumerate(LONG):
        name = f"long/{k:02d}.wav"
        with tempfile.TemporaryDirectory() as tmp:
            parts = []
            for n, i in enumerate(picks):
                raw = Path(tmp) / f"{n:03d}.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), SENTENCES[i]], check=True)
                parts.append(str(raw))
            joined = Path(tmp) / "joined.wav"
            _join(parts, joined)
            subprocess.run(["sox", "-D", "-V1", str(joined), "-r", "16000", "-c", "1", "-b", "16", str(out / name)],
                           check=True)
        rows.append({"path": name, "text": " ".join(SENTENCES[i] for i in picks)})
    with open(out / "long.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "text"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _join(parts: list[str], dest: Path) -> None:
    """Concatenate ``parts`` with 0.4 s of silence after each (sox pads each part, then joins them)."""
    padded = []
    for p in parts:
        q = p.replace(".wav", "-pad.wav")
        subprocess.run(["sox", "-D", "-V1", p, q, "pad", "0", "0.4"], check=True)
        padded.append(q)
    subprocess.run(["sox", "-D", "-V1", *padded, str(dest)], check=True)


if __name__ == "__main__":
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "manifests/data/eval")
