"""Make the checked-in speech test data and the tiny Whisper tokenizer (run from the repo root).

    python scripts/make_speech_data.py

1. manifests/data/speech/*.wav: 16 kHz mono utterances spoken by espeak-ng (apt: espeak-ng,
   sox), each with its transcript beside it as .txt.
2. manifests/data/whisper-tokenizer/: a small byte-level BPE tokenizer with Whisper's special
   tokens and a WhisperFeatureExtractor config, for the random Whisper models (the real
   Whisper vocabulary is not available offline). Trained on the transcripts plus a few lines.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

UTTERANCES = {
    "hello": "hello world this is a test",
    "weather": "the weather is nice today",
    "numbers": "one two three four five six seven",
}
CORPUS = [
    *UTTERANCES.values(),
    "the quick brown fox jumps over the lazy dog",
    "speech recognition turns audio into text",
    "a rebuild runs only what changed and every runtime must agree",
]
SPECIAL = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
           "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]


def make_audio(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in UTTERANCES.items():
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "170", "-w", str(raw), text], check=True)
            subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out / f"{name}.wav")],
                           check=True)
        (out / f"{name}.txt").write_text(text + "\n")


def make_tokenizer(out: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 20, vocab_size=400, min_frequency=1, special_tokens=[])
    with tempfile.TemporaryDirectory() as tmp:
        bpe.save_model(tmp)
        tok = WhisperTokenizer(f"{tmp}/vocab.json", f"{tmp}/merges.txt", unk_token="<|endoftext|>",
                               bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                               predict_timestamps=False)
        tok.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
        fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400)
        WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(out)


if __name__ == "__main__":
    root = Path("manifests/data")
    make_audio(root / "speech")
    make_tokenizer(root / "whisper-tokenizer")
    print("wrote", sorted(str(p) for p in root.rglob("*") if p.is_file()))
