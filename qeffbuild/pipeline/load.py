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


def random_model(src: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """A transformers architecture built from its config with a fixed seed."""
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


def load_folder(ctx: StepContext, folder: Path, auto_class: str) -> Any:
    """A model folder loaded with ``auto_class`` (config overrides applied); failures name the model and fix."""
    import transformers

    p = ctx.params
    trust = bool(p["trust_remote_code"])
    name = ctx.node_id.partition(":")[2]  # load:<model name>
    try:
        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=trust, **p["overrides"])
        cls = getattr(transformers, auto_class)
        model = cls.from_pretrained(folder, config=config, trust_remote_code=trust).eval()
        if (folder / "generation_config.json").is_file():
            # Keep the checkpoint's own generation config (prompt tokens, suppressions) as it is.
            model.generation_config = transformers.GenerationConfig.from_pretrained(folder)
        return model
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError) as e:
        raise ModelLoadError(_explain_load_error(name, folder, {**p, "auto_class": auto_class}, e)) from e
    except Exception as e:  # safetensors' own error type, and whatever else a loader raises
        raise ModelLoadError(_explain_load_error(name, folder, {**p, "auto_class": auto_class}, e)) from e


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


def save_preprocessors(preprocessors: list[tuple[str, Path]], out: Path, trust: bool) -> list[str]:
    """Save each tokenizer, processor or feature extractor; return notes of what was changed, for the report."""
    import transformers

    notes: list[str] = []
    for kind, folder in preprocessors:
        try:
            if kind == "processor":
                transformers.AutoProcessor.from_pretrained(folder, trust_remote_code=trust).save_pretrained(out)
            elif kind == "feature_extractor":
                transformers.AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=trust).save_pretrained(out)
            else:
                tok = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
                if tok.pad_token is None and tok.eos_token is not None:
                    # Decoder-only tokenizers (GPT-2) have no pad token: pad with EOS, as sentence-transformers does.
                    tok.pad_token = tok.eos_token
                    notes.append(f"the tokenizer has no pad token; padding with its eos token {tok.eos_token!r} "
                                 "(as sentence-transformers does)")
                tok.save_pretrained(out)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelLoadError(f"no usable {kind.replace('_', ' ')} in {folder}: {str(e).splitlines()[0][:300]}; "
                                 "a random model names its folder with source.tokenizer") from e
    return notes


def run(ctx: StepContext) -> None:
    p = ctx.params
    out = ctx.out / "model"
    if p.get("builder"):  # a family that constructs its models itself (speech encoder-decoders …)
        model, preprocessors = load_attr(p["builder"])(ctx)
    elif p["source"]["kind"] == "random":
        model = random_model(p["source"], p["overrides"])
        tok = ctx.paths.get("tokenizer")
        preprocessors = [(p["preprocessor"], tok)] if tok is not None else []
    else:
        folder = ctx.paths["source"]
        model = load_folder(ctx, folder, p["auto_class"])
        preprocessors = [(p["preprocessor"], folder)]
        for name in _ST_FILES:
            if (folder / name).is_file():
                out.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / name, out / name)
        for pooling_dir in folder.glob("*_Pooling"):
            shutil.copytree(pooling_dir, out / pooling_dir.name)
    model.save_pretrained(out)
    notes = save_preprocessors(preprocessors, out, bool(p["trust_remote_code"]))
    (ctx.out / "notes.json").write_text(json.dumps(notes))
    print(f"saved {type(model).__name__} with {sum(t.numel() for t in model.parameters())} parameters")
    for note in notes:
        print(f"note: {note}")
