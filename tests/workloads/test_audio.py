"""Speech recognition end to end, its word error rate, and a hub audio set refused offline."""

from __future__ import annotations

import pytest

from ecopipe.config import ConfigError
from ecopipe.job import run_job
from ecopipe.names import Tag
from ecopipe.workloads.metrics import word_error_rate
from tests.workloads.conftest import no_runs, quality_keys, run, tiny


def test_speech_recognition_random_weights(make_cfg, client):
    metrics, tags = run(
        make_cfg,
        client,
        *tiny("whisper-tiny"),
        "dataset=synthetic_audio",
        "dataset.limit=2",
        "dataset.audio_seconds=1",
        "model.max_new_tokens=3",
        "batch_size=2",
    )
    assert 0 < metrics["tokens_out"] <= metrics["samples"] * 3
    assert quality_keys(metrics) == set() and tags[Tag.WEIGHTS] == "random"


def test_word_error_rate_is_word_edit_distance():
    assert word_error_rate(["The cat sat on the mat."], ["the cat sit on mat"]) == pytest.approx(2 / 6)
    assert word_error_rate(["a b", "c d e"], ["a b", "c d e"]) == 0
    assert word_error_rate(["one"], ["one two three"]) == 2  # insertions count: WER can exceed 1
    with pytest.raises(ValueError):
        word_error_rate(["a"], [])


def test_hub_audio_set_is_refused_clearly_offline(make_cfg, client):
    with pytest.raises(ConfigError) as error:
        run_job(make_cfg(*tiny("whisper-tiny"), "dataset=librispeech_dummy"))
    assert "dataset=librispeech_dummy" in str(error.value) and "dataset=synthetic_audio" in str(error.value)
    assert no_runs(client)
