"""Make the checked-in speech test data and the tiny tokenizers of the random speech models (from the repo root).

    python scripts/make_speech_data.py

1. manifests/data/speech/*.wav: 16 kHz mono utterances spoken by espeak-ng (apt: espeak-ng, sox), each
   with its transcript beside it as .txt.
2. manifests/data/whisper-tokenizer/: a small byte-level BPE tokenizer with Whisper's special tokens
   and a WhisperFeatureExtractor config (the real Whisper vocabulary is not available offline);
   manifests/data/whisper-tokenizer-multilingual/: the same with four language tokens (en, de, fr, es)
   before <|translate|>, laid out as a multilingual Whisper's are.
3. manifests/data/s2t-tokenizer/: a small sentencepiece tokenizer and a Speech2TextFeatureExtractor
   config (a Speech2TextProcessor).
4. manifests/data/wav2vec2-bert/: a small WordPiece (BERT) tokenizer and a Wav2Vec2FeatureExtractor
   config: the decoder's tokenizer and the encoder's feature extractor of a speech encoder-decoder.
Each tokenizer is trained on the transcripts plus a few lines.
"""

from __future__ import annotations

import json
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


def make_whisper_tokenizer(out: Path, languages: tuple[str, ...] = ("en",)) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    special = [SPECIAL[0], SPECIAL[1], *(f"<|{lang}|>" for lang in languages), *SPECIAL[3:]]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 20, vocab_size=400, min_frequency=1, special_tokens=[])
    with tempfile.TemporaryDirectory() as tmp:
        bpe.save_model(tmp)
        tok = WhisperTokenizer(f"{tmp}/vocab.json", f"{tmp}/merges.txt", unk_token="<|endoftext|>",
                               bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                               predict_timestamps=False)
        tok.add_special_tokens({"additional_special_tokens": special[1:]})
        fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400)
        WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(out)


def make_s2t_tokenizer(out: Path) -> None:
    import sentencepiece as spm
    from transformers import Speech2TextFeatureExtractor, Speech2TextProcessor, Speech2TextTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "corpus.txt").write_text("\n".join(CORPUS * 20))
        spm.SentencePieceTrainer.train(input=f"{tmp}/corpus.txt", model_prefix=f"{tmp}/sp", vocab_size=120,
                                       model_type="bpe", character_coverage=1.0, bos_id=-1, eos_id=-1, unk_id=0,
                                       pad_id=-1, user_defined_symbols=[], minloglevel=2)
        pieces = [line.split("\t")[0] for line in (Path(tmp) / "sp.vocab").read_text().splitlines()]
        vocab = {p: i for i, p in enumerate(specials + [p for p in pieces if p not in specials])}
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        tok = Speech2TextTokenizer(vocab_file=f"{tmp}/vocab.json", spm_file=f"{tmp}/sp.model")
        fe = Speech2TextFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=16000)
        Speech2TextProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(out)


def make_wav2vec2_bert(out: Path) -> None:
    from tokenizers import BertWordPieceTokenizer
    from transformers import PreTrainedTokenizerFast, Wav2Vec2FeatureExtractor

    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(CORPUS * 20, vocab_size=200, min_frequency=1)
    PreTrainedTokenizerFast(tokenizer_object=wp._tokenizer, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                            pad_token="[PAD]", mask_token="[MASK]").save_pretrained(out)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(out)


if __name__ == "__main__":
    root = Path("manifests/data")
    make_audio(root / "speech")
    make_whisper_tokenizer(root / "whisper-tokenizer")
    make_whisper_tokenizer(root / "whisper-tokenizer-multilingual", ("en", "de", "fr", "es"))
    make_s2t_tokenizer(root / "s2t-tokenizer")
    make_wav2vec2_bert(root / "wav2vec2-bert")
    print("wrote", sorted(str(p) for p in root.rglob("*") if p.is_file()))
