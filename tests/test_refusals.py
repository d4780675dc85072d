"""Bad input of every kind is refused before anything loads or any run opens, in one line."""

from __future__ import annotations

import json

import pytest

from ecopipe import aggregate, reimpact
from ecopipe.config import ConfigError
from ecopipe.job import run_job
from ecopipe.workloads.loading import MODEL_CONFIG_DIR
from tests.conftest import run_cli


def no_runs(client) -> bool:
    experiment = client.get_experiment_by_name("ecopipe")
    return experiment is None or client.search_runs([experiment.experiment_id]) == []


@pytest.mark.parametrize(
    "override,needle",
    [
        ("+monitor.trails=5", "did you mean monitor.trials?"),
        ("impact.carbon_intensity=nan", "impact.carbon_intensity=nan"),
        ("impact.wue=inf", "impact.wue=inf"),
        ("monitor.min_window_s=inf", "monitor.min_window_s=inf"),
        ("monitor.min_hz=nan", "monitor.min_hz=nan"),
        ("+model.params.bogus=1", "bogus"),
        ("+model.params.max_iters=5", "did you mean max_iter?"),
    ],
)
def test_bad_value_opens_no_run(make_cfg, client, override, needle):
    with pytest.raises(ConfigError, match=needle.replace("?", "\\?")):
        run_job(make_cfg(override))
    assert no_runs(client)


@pytest.mark.parametrize(
    "uri,needle",
    [
        ("foo://x", "is not supported: use sqlite:///PATH"),
        ("sqlite:////proc/nonexist/mlflow.db", "/proc/nonexist cannot be written"),
        ("sqlite:////sys/mlflow.db", "/sys cannot be written"),
        ("http://127.0.0.1:9", "no tracking server answered"),
    ],
)
def test_bad_tracking_uri_is_refused_before_the_model_is_built(make_cfg, monkeypatch, uri, needle):
    from ecopipe import job

    def never(cfg):
        raise AssertionError("the workload was built before the tracking URI was checked")

    monkeypatch.setattr(job, "build_workload", never)
    with pytest.raises(ConfigError, match=needle):
        run_job(make_cfg(f"tracking.uri={uri}"))


def test_cli_refusals_are_one_line(tmp_path):
    for args, needle in (
        (["+monitor.trails=5", "+batch_sise=3"], "did you mean monitor.trials?"),
        (["tracking.uri=sqlite:////proc/nonexist/mlflow.db"], "cannot be written"),
        # The named microarchitecture must be one the coefficient table knows; the message lists them.
        (["hardware.cpu_microarch=pentium4"], "hardware.cpu_microarch = 'pentium4' is not a known"),
        (["monitor.target_rel_ci=0.05", "monitor.trials=5", "monitor.max_trials=4"], "monitor.max_trials=4"),
    ):
        done = run_cli(*args, cwd=tmp_path)
        assert done.returncode == 2, done.stderr[-2000:]
        assert needle in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        if "cpu_microarch" in needle:
            assert "sapphire_rapids" in done.stderr and "zen3" in done.stderr  # the allowed values
    assert not (tmp_path / "mlflow.db").exists()


def test_model_directory_without_weights_is_refused(make_cfg, client, tmp_path):
    directory = tmp_path / "gpt2-no-weights"
    directory.mkdir()
    (directory / "config.json").write_text((MODEL_CONFIG_DIR / "gpt2.json").read_text())
    assert json.loads((directory / "config.json").read_text())["model_type"] == "gpt2"
    overrides = ("model=gpt2", f"model.hf_id={directory}", "dataset=synthetic_text", "dataset.limit=2")
    with pytest.raises(ConfigError, match="has a config.json but no weights"):
        run_job(make_cfg(*overrides))
    assert no_runs(client)


def test_reimpact_refuses_non_finite_factors(make_cfg, store, client, capsys):
    run_id = run_job(make_cfg()).run_id
    for override in ("impact.carbon_intensity=nan", "impact.pue=nan", "impact.wue=inf", "impact.ewif=-inf"):
        assert reimpact.main(["--run-id", run_id, "--tracking-uri", store, override]) == 2
        assert override.split("=")[0] in capsys.readouterr().err
    assert reimpact.main(["--run-id", run_id, "--tracking-uri", "foo://x", "region=FRA"]) == 2
    assert "tracking.uri=foo://x is not supported" in capsys.readouterr().err
    experiment = client.get_experiment_by_name("ecopipe").experiment_id
    assert len(client.search_runs([experiment])) == 1  # nothing was logged


def test_aggregate_refuses_an_unwritable_out_folder(make_cfg, store, capsys):
    run_job(make_cfg())
    assert aggregate.main(["--tracking-uri", store, "--out", "/proc/x"]) == 2
    err = capsys.readouterr().err
    assert "ecopipe.aggregate: error: --out /proc/x: the folder /proc/x cannot be written" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "bad,needle",
    [
        ("tracking.uri=foo://x", "tracking.uri=foo://x is not supported"),
        ("hydra.sweep.dir=/proc/x", "hydra.sweep.dir: the folder /proc/x cannot be written"),
    ],
)
def test_sweep_with_a_bad_store_or_folder_stops_in_one_line(tmp_path, store, bad, needle):
    done = run_cli(
        "-m", f"tracking.uri={store}", bad, "model=logistic_regression,decision_tree", cwd=tmp_path
    )
    assert done.returncode == 2 and needle in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "job 1 of 2" not in done.stdout + done.stderr
