"""The load step (worker side): a model source → a Hugging Face folder with overrides applied.

Failures of third-party loaders (a corrupt safetensors header, a config that names another
architecture, missing files) become :class:`~qeffbuild.errors.ModelLoadError` naming the
model, the file and the fix; the full traceback stays in the step's log.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..core.plugins import load_attr
from ..core.steps import StepContext
from ..errors import InputError, ModelLoadError

# Files a sentence-transformers model ships beside the HF ones; kept so that runtime can load it.
_ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def _random_model(src: dict[str, Any], overrides: dict[str, Any], auto_class: str) -> Any:
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
    except (TypeError, ValueError, KeyError) as e:
        raise InputError(f"source.config for {arch}: {e}") from e
    torch.manual_seed(int(src["seed"]))
    return cls(config).eval()


def _load_folder(ctx: StepContext, folder: Path, p: dict[str, Any]) -> Any:
    import transformers

    trust = bool(p["trust_remote_code"])
    name = ctx.node_id.partition(":")[2]  # load:<model name>
    try:
        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=trust, **p["overrides"])
        cls = getattr(transformers, p["auto_class"])
        return cls.from_pretrained(folder, config=config, trust_remote_code=trust).eval()
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError) as e:
        raise ModelLoadError(_explain_load_error(name, folder, p, e)) from e
    except Exception as e:  # safetensors' own error type, and whatever else a loader raises
        raise ModelLoadError(_explain_load_error(name, folder, p, e)) from e


def _explain_load_error(name: str, folder: Path, p: dict[str, Any], e: Exception) -> str:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:400]
    text = str(e)
    if "deserializ" in text or "header" in text.lower() or type(e).__name__ == "SafetensorError":
        weights = sorted(x.name for x in folder.glob("*.safetensors")) or ["the weights"]
        return (f"model {name!r}: {', '.join(weights)} in {folder} is corrupt or truncated ({first}); "
                "restore the file from the model's source or save the model again")
    if "Unrecognized configuration class" in text or "Unrecognized model" in text:
        return (f"model {name!r} ({folder}) cannot be loaded with {p['auto_class']} for task {p['task']!r}: "
                f"{first.split('.')[0]}; check the model's `task`, or that config.json names the right model_type")
    if isinstance(e, OSError):
        return f"model {name!r}: cannot read the model in {folder} ({first}); check that the folder is complete"
    return f"model {name!r} ({folder}) failed to load: {type(e).__name__}: {first}"


def _save_preprocessor(folder: Path, out: Path, kind: str, trust: bool) -> list[str]:
    """Save the tokenizer or processor; return notes of what was changed, for the report."""
    import transformers

    notes: list[str] = []
    try:
        if kind == "processor":
            transformers.AutoProcessor.from_pretrained(folder, trust_remote_code=trust).save_pretrained(out)
            return notes
        tok = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"no usable tokenizer or processor in {folder}: {str(e).splitlines()[0][:300]}; "
                             "a random model names one with source.tokenizer") from e
    if tok.pad_token is None and tok.eos_token is not None:
        # Decoder-only tokenizers (GPT-2) have no pad token: pad with EOS, as sentence-transformers does.
        tok.pad_token = tok.eos_token
        notes.append(f"the tokenizer has no pad token; padding with its eos token {tok.eos_token!r} "
                     "(as sentence-transformers does)")
    tok.save_pretrained(out)
    return notes


def run(ctx: StepContext) -> None:
    p = ctx.params
    src, trust = p["source"], bool(p["trust_remote_code"])
    out = ctx.out / "model"
    if src["kind"] == "random":
        model = _random_model(src, p["overrides"], p["auto_class"])
        tokenizer_dir = ctx.paths.get("tokenizer")
    else:
        folder = ctx.paths["source"]
        model = _load_folder(ctx, folder, p)
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
    if src["kind"] == "random" and p.get("post_load") and tokenizer_dir is not None:
        load_attr(p["post_load"])(model, tokenizer_dir)
    model.save_pretrained(out)
    notes = _save_preprocessor(tokenizer_dir, out, p["preprocessor"], trust) if tokenizer_dir is not None else []
    (ctx.out / "notes.json").write_text(json.dumps(notes))
    print(f"saved {type(model).__name__} with {sum(t.numel() for t in model.parameters())} parameters")
    for note in notes:
        print(f"note: {note}")
