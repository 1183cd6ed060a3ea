"""Make the checked-in data of the causal-LM examples (from the repo root).

    python scripts/make_lm_data.py

1. manifests/data/lm-tokenizer/: a small byte-level BPE tokenizer (GPT-2 style, 400 tokens with
   ``<|endoftext|>`` as EOS and padding), trained on the prompts and a few lines: the random models'
   tokenizer (no hub at build time).
2. manifests/data/prompts.txt: prompts of different lengths, one a line, for the validations.
"""

from __future__ import annotations

from pathlib import Path

PROMPTS = [
    "hello",
    "the quick brown fox jumps over the lazy dog",
    "a rebuild runs only what changed and every runtime must agree with the reference model on every token",
    "speech recognition turns audio into text",
]
CORPUS = [*PROMPTS, "one two three four five six seven", "the weather is nice today",
          "caches are keyed by the content of every input"]


def make_tokenizer(out: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 20, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.save_pretrained(out)


if __name__ == "__main__":
    root = Path("manifests/data")
    make_tokenizer(root / "lm-tokenizer")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    print("wrote", root / "lm-tokenizer", root / "prompts.txt")
