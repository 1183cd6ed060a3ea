"""The transcriber's own Whisper log-mel and tokenizer.json decode give transformers' numbers and text exactly;
any other folder gets transformers' classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qeffbuild.pipeline import preprocessors
from tests.helpers import REPO

TOKENIZER = REPO / "manifests" / "data" / "whisper-tokenizer"


@pytest.fixture(scope="module")
def whisper_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved Whisper folder as the load step writes one: the tokenizer files and the extractor's config."""
    import shutil

    import transformers

    folder = tmp_path_factory.mktemp("whisper")
    for f in TOKENIZER.iterdir():
        if f.name != "processor_config.json":  # its extractor makes 80 bins; this folder's makes large-v3's 128
            shutil.copy2(f, folder / f.name)
    transformers.WhisperFeatureExtractor(feature_size=128).save_pretrained(folder)
    return folder


def test_the_mel_filter_bank_is_transformers(whisper_folder: Path) -> None:
    from transformers.audio_utils import mel_filter_bank

    for bins in (80, 128):
        want = mel_filter_bank(num_frequency_bins=201, num_mel_filters=bins, min_frequency=0.0, max_frequency=8000.0,
                               sampling_rate=16000, norm="slaney", mel_scale="slaney")
        np.testing.assert_array_equal(preprocessors.mel_filter_bank(201, bins, 16000), want)


def test_whisper_features_are_transformers_features(whisper_folder: Path) -> None:
    """As the transcriber calls it: a batch padded or cut to a graph's length, and one recording unpadded."""
    import transformers

    ours = preprocessors.feature_extractor(whisper_folder)
    theirs = transformers.WhisperFeatureExtractor.from_pretrained(whisper_folder)
    assert isinstance(ours, preprocessors.WhisperLogMel)
    rng = np.random.default_rng(0)
    audios = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 47_123, 100_000)]
    kw = {"sampling_rate": 16000, "return_tensors": "np", "padding": "max_length", "truncation": True}
    for samples in (80_000, 480_000):  # the longest audio is cut at 80,000 samples
        got = ours(audios, max_length=samples, **kw)["input_features"]
        want = theirs(audios, max_length=samples, **kw)["input_features"]
        assert got.dtype == np.float32 and got.shape == want.shape == (3, 128, samples // 160)
        np.testing.assert_array_equal(got, want)
    long = rng.standard_normal(16000 * 45).astype(np.float32) * 0.1  # long-form: the whole recording, unpadded
    kw = {"sampling_rate": 16000, "return_tensors": "np", "truncation": False, "padding": "longest"}
    np.testing.assert_array_equal(ours(long, **kw)["input_features"], theirs(long, **kw)["input_features"])


def test_the_decode_is_transformers_decode(whisper_folder: Path) -> None:
    import transformers

    ours = preprocessors.tokenizer(whisper_folder)
    theirs = transformers.WhisperTokenizer.from_pretrained(whisper_folder)
    assert isinstance(ours, preprocessors.TokenizerJson)
    rng = np.random.default_rng(1)
    for i in range(2000):  # words, specials (the last ids here) and timestamps mixed, as a random model emits them
        low = theirs.vocab_size if i % 3 == 0 else 0
        ids = rng.integers(low, len(theirs), rng.integers(0, 30)).tolist()
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True), ids
    prev, start = theirs.convert_tokens_to_ids(["<|startofprev|>", "<|startoftranscript|>"])
    for ids in ([prev, 5, 6, start, 7, 8], [prev, 5, 6], [5, prev, start, 6], []):  # a previous-text prompt is dropped
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True), ids


def test_other_folders_get_transformers_classes(whisper_folder: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(whisper_folder, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "preprocessor_config.json").read_text())
    (tmp_path / "m" / "preprocessor_config.json").write_text(json.dumps({**config, "dither": 1e-4}))
    assert type(preprocessors.feature_extractor(tmp_path / "m")).__name__ == "WhisperFeatureExtractor"
    tok = json.loads((tmp_path / "m" / "tokenizer_config.json").read_text())
    (tmp_path / "m" / "tokenizer_config.json").write_text(json.dumps({**tok, "clean_up_tokenization_spaces": True}))
    assert not isinstance(preprocessors.tokenizer(tmp_path / "m"), preprocessors.TokenizerJson)


def test_a_large_v3_folder_as_the_load_step_saves_it_gets_128_bins(tmp_path: Path) -> None:
    """The load step saves a processor whose extractor follows the model's 128 mel bins (processor_config.json);
    the transcriber's features follow it as transformers' do."""
    import transformers

    from qeffbuild.tasks.speech.prompt import matched_processor

    folder = matched_processor(TOKENIZER, 128, tmp_path / "processor")
    audio = np.random.default_rng(2).standard_normal(32_000).astype(np.float32) * 0.1
    kw = {"sampling_rate": 16000, "return_tensors": "np", "padding": "max_length", "truncation": True,
          "max_length": 480_000}
    got = preprocessors.feature_extractor(folder)([audio], **kw)["input_features"]
    want = transformers.AutoFeatureExtractor.from_pretrained(folder)([audio], **kw)["input_features"]
    assert got.shape == (1, 128, 3000)
    np.testing.assert_array_equal(got, want)
