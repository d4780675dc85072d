"""Hub data and models offline, and models and data that do not fit, are refused before anything loads."""

from __future__ import annotations

import pytest

from ecopipe.config import ConfigError
from ecopipe.job import run_job
from tests.workloads.conftest import IMAGES, TEXT, no_runs, tiny


def test_hub_text_set_offline_is_refused_naming_the_synthetic_option(make_cfg, client):
    with pytest.raises(ConfigError) as error:
        run_job(make_cfg(*tiny("gpt2"), "dataset=wikitext"))
    message = str(error.value)
    assert (
        "dataset=wikitext" in message
        and "wikitext-2-raw-v1" in message
        and "dataset=synthetic_text" in message
    )
    assert no_runs(client)


def test_unknown_model_id_offline_is_refused(make_cfg, client):
    with pytest.raises(ConfigError) as error:
        run_job(make_cfg("model=gpt2", "model.hf_id=ecopipe-tests/no-such-model", *TEXT))
    assert "model.hf_id=ecopipe-tests/no-such-model" in str(error.value) and "weights=random" in str(
        error.value
    )
    assert no_runs(client)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["model=gpt2", "dataset=synthetic_images"], "does not fit"),
        (["model=vit-base-patch16-224", "dataset=synthetic_text"], "does not fit"),
        (["model=whisper-tiny", "dataset=wikitext"], "does not fit"),
        ([*tiny("vit-base-patch16-224"), *IMAGES, "engine=compiled"], "engine=compiled"),
        ([*tiny("vit-base-patch16-224"), *IMAGES, "model.phase=prefill"], "model.phase=prefill"),
        (["model=gpt2", "model.weights=random", "model.name=my_lm", *TEXT], "shipped: "),
        (["model=gpt2", "model.weights=random", "+model.config_overrides={n_embdd:8}", *TEXT], "n_embdd"),
        (["model=gpt2", "+model.config_overrides={n_layer:1}", *TEXT], "weights=random only"),
        (["model=gpt2", "model.architecture=NoSuchModel", *TEXT], "model.architecture=NoSuchModel"),
        (["model=gpt2", "model.weights=random", "model.architecture=BertModel", *TEXT], "needs a BertConfig"),
        ([*tiny("gpt2"), "dataset=synthetic_text", "dataset.limit=null"], "dataset.limit"),
    ],
)
def test_bad_combinations_are_refused_before_loading(make_cfg, client, overrides, needle):
    with pytest.raises(ConfigError) as error:
        run_job(make_cfg(*overrides))
    assert needle in str(error.value)
    assert no_runs(client)
