"""The load step (worker side): a model source → a Hugging Face folder with overrides applied."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .errors import InputError
from .steps import StepContext

# Files a sentence-transformers model ships beside the HF ones; kept so that runtime can load it.
_ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def _auto_class(task: str) -> Any:
    import transformers

    return transformers.AutoModelForSpeechSeq2Seq if task == "speech-seq2seq" else transformers.AutoModel


def _random_model(src: dict[str, Any], overrides: dict[str, Any]) -> Any:
    import torch
    import transformers

    arch = src["architecture"]
    cls = getattr(transformers, arch, None)
    if cls is None or not hasattr(cls, "config_class"):
        from difflib import get_close_matches

        close = get_close_matches(arch, [n for n in dir(transformers) if n.endswith("Model") or "For" in n], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"source.random: transformers has no model class {arch!r}{hint}")
    try:
        config = cls.config_class(**{**src["config"], **overrides})
    except (TypeError, ValueError) as e:
        raise InputError(f"source.config for {arch}: {e}") from e
    torch.manual_seed(int(src["seed"]))
    return cls(config).eval()


def _save_preprocessor(folder: Path, out: Path, task: str, trust: bool) -> None:
    if task == "speech-seq2seq":
        from transformers import AutoProcessor

        AutoProcessor.from_pretrained(folder, trust_remote_code=trust).save_pretrained(out)
    else:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(folder, trust_remote_code=trust).save_pretrained(out)


def _speech_generation_config(model: Any, tokenizer_dir: Path) -> None:
    """A random Whisper gets the prompt tokens its tokenizer defines, as real checkpoints ship them."""
    import re

    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    vocab = tok.get_vocab()
    gc = GenerationConfig.from_model_config(model.config)
    langs = {t: i for t, i in vocab.items() if re.fullmatch(r"<\|[a-z]{2,3}\|>", t)}
    tasks = {name: vocab[f"<|{name}|>"] for name in ("transcribe", "translate") if f"<|{name}|>" in vocab}
    # Whisper's generation-config fields: GenerationConfig keeps unknown attributes as given.
    extra = {"lang_to_id": langs or None, "task_to_id": tasks or None,
             "no_timestamps_token_id": vocab.get("<|notimestamps|>"), "is_multilingual": bool(langs)}
    for name, value in extra.items():
        if value is not None:
            setattr(gc, name, value)
    gc._from_model_config = False  # an explicit config: loaders must not rebuild it from the model config
    model.generation_config = gc


def run(ctx: StepContext) -> None:
    p = ctx.params
    src, task, trust = p["source"], p["task"], bool(p["trust_remote_code"])
    out = ctx.out / "model"
    if src["kind"] == "random":
        model = _random_model(src, p["overrides"])
        tokenizer_dir = ctx.paths.get("tokenizer")
    else:
        from transformers import AutoConfig

        folder = ctx.paths["source"]
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust, **p["overrides"])
        model = _auto_class(task).from_pretrained(folder, config=config, trust_remote_code=trust).eval()
        if (folder / "generation_config.json").is_file():
            # Keep the checkpoint's own generation config (prompt tokens, suppressions) as it is.
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(folder)
        tokenizer_dir = folder
        for name in _ST_FILES:
            if (folder / name).is_file():
                out.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / name, out / name)
        for pooling_dir in folder.glob("*_Pooling"):
            shutil.copytree(pooling_dir, out / pooling_dir.name)
    if src["kind"] == "random" and task == "speech-seq2seq" and tokenizer_dir is not None:
        _speech_generation_config(model, tokenizer_dir)
    model.save_pretrained(out)
    if tokenizer_dir is not None:
        _save_preprocessor(tokenizer_dir, out, task, trust)
    print(f"saved {type(model).__name__} with {sum(t.numel() for t in model.parameters())} parameters")
