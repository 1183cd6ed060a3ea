"""Loading a speech model (worker side): Whisper, Speech2Text or a SpeechEncoderDecoderModel.

A SpeechEncoderDecoderModel comes three ways: random from an encoder config and a decoder config
(``SpeechEncoderDecoderConfig.from_encoder_decoder_configs``), composed from two sources as
``from_encoder_decoder_pretrained`` does (each side a folder, hub snapshot, package or random
config), or a saved SpeechEncoderDecoderModel folder. Its tokenizer comes from the decoder's
side, its feature extractor from the encoder's. Token ids set in the manifest
(``decoder_start_token_id``, ``pad_token_id``, ``eos_token_id``) go into the config and the
generation config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...core.steps import StepContext
from ...errors import InputError, ModelLoadError
from ...pipeline.load import load_folder, random_model
from .families import ARCHITECTURES, Architecture, architecture_of, of_model_type

Preprocessors = list[tuple[str, Path]]  # (kind: processor | tokenizer | feature_extractor, folder)


def build(ctx: StepContext) -> tuple[Any, Preprocessors]:
    p = ctx.params
    src = p["source"]
    if src["kind"] == "composed":
        model, pre = _composed(ctx)
    elif src["kind"] == "random" and getattr(architecture_of(src["architecture"], None), "composed", False):
        model, pre = _random_encoder_decoder(src, p["overrides"]), _preprocessors(ctx.paths.get("tokenizer"))
    elif src["kind"] == "random":
        model = random_model(src, p["overrides"])
        tok = ctx.paths.get("tokenizer")
        pre = [("processor", tok)] if tok is not None else []
        if tok is not None and of_model_type(model.config.model_type).whisper_tokens:
            from .prompt import matched_processor, random_generation_config

            random_generation_config(model, tok)
            pre = [("processor", matched_processor(tok, int(model.config.num_mel_bins), ctx.out.parent / "processor"))]
    else:
        folder = ctx.paths["source"]
        arch = _saved_architecture(folder)
        model = load_folder(ctx, folder, arch.auto_class)
        pre = _preprocessors(folder) if arch.composed else [("processor", folder)]
    _set_token_ids(model, p.get("token_ids") or {})
    return model, pre


def _saved_architecture(folder: Path) -> Architecture:
    import json

    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        model_type = None
    return architecture_of(None, model_type) or ARCHITECTURES["whisper"]


def _preprocessors(folder: Path | None) -> Preprocessors:
    """An encoder-decoder folder holds a tokenizer and a feature extractor, saved separately."""
    return [("tokenizer", folder), ("feature_extractor", folder)] if folder is not None else []


def _random_encoder_decoder(src: dict[str, Any], overrides: dict[str, Any]) -> Any:
    import torch
    from transformers import AutoConfig, SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel

    cfg = {**src["config"], **overrides}
    try:
        enc = AutoConfig.for_model(**dict(cfg["encoder"]))
        dec = AutoConfig.for_model(**dict(cfg["decoder"]))
        config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
        for key, value in cfg.items():
            if key not in ("encoder", "decoder"):
                setattr(config, key, value)
    except (KeyError, ValueError, TypeError) as e:
        raise InputError(f"source.config of SpeechEncoderDecoderModel: {e}") from e
    torch.manual_seed(int(src["seed"]))
    return SpeechEncoderDecoderModel(config=config).eval()


def _side(ctx: StepContext, side: str, src: dict[str, Any], decoder: bool) -> Any:
    """One side of a composed model: random from its config, or loaded from its folder."""
    import transformers

    if src["kind"] == "random":
        cls = getattr(transformers, src["architecture"], None)
        if cls is None or not hasattr(cls, "config_class"):
            raise InputError(f"source.{side}.random: transformers has no model class {src['architecture']!r}")
        cfg = dict(src["config"])
        if decoder:
            cfg.update(is_decoder=True, add_cross_attention=True)
        import torch

        torch.manual_seed(int(src["seed"]))
        return cls(cls.config_class(**cfg)).eval()
    folder = ctx.paths[f"{side}-source"]
    try:
        if decoder:
            config = transformers.AutoConfig.from_pretrained(folder, is_decoder=True, add_cross_attention=True)
            return transformers.AutoModelForCausalLM.from_pretrained(folder, config=config).eval()
        return transformers.AutoModel.from_pretrained(folder).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelLoadError(f"source.{side} ({folder}) cannot be loaded as the {side} of a speech encoder-decoder: "
                             f"{str(e).splitlines()[0][:300]}") from e


def _composed(ctx: StepContext) -> tuple[Any, Preprocessors]:
    from transformers import SpeechEncoderDecoderModel

    src = ctx.params["source"]
    encoder = _side(ctx, "encoder", src["encoder"], decoder=False)
    decoder = _side(ctx, "decoder", src["decoder"], decoder=True)
    model = SpeechEncoderDecoderModel(encoder=encoder, decoder=decoder).eval()
    for key, value in ctx.params["overrides"].items():
        setattr(model.config, key, value)
    tok = ctx.paths.get("decoder-source") or ctx.paths.get("decoder-tokenizer")
    fe = ctx.paths.get("encoder-source") or ctx.paths.get("encoder-tokenizer")
    pre: Preprocessors = []
    if tok is not None:
        pre.append(("tokenizer", tok))
    if fe is not None:
        pre.append(("feature_extractor", fe))
    return model, pre


def _set_token_ids(model: Any, ids: dict[str, int]) -> None:
    from transformers import GenerationConfig

    for key, value in ids.items():
        setattr(model.config, key, value)
    if ids or model.generation_config is None:
        gen = model.generation_config or GenerationConfig.from_model_config(model.config)
        for key, value in ids.items():
            setattr(gen, key, value)
        model.generation_config = gen
