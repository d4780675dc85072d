"""The job's run as a user finds it: from the command line, by its name, and in its experiment's view."""

from __future__ import annotations

import json
import re

from ecopipe.job import run_job
from ecopipe.names import Tag
from tests.conftest import run_cli


def test_cli_default_job(tmp_path):
    done = run_cli("monitor=quick", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "per 1,000 inferences" in done.stdout
    assert "data        digits (default for tabular_classification" in done.stdout
    assert (tmp_path / "mlflow.db").exists()


def test_run_names_tell_different_configs_apart_and_keep_repeats_together(make_cfg, client):
    """The name's parts (model, data, precision, batch) do not show every key: a hash of the config
    without its repeat keys ends it, so that an override the parts miss gets another name, and the
    seeds of one config share theirs."""
    first = run_job(make_cfg("dataset.limit=100"))
    other = run_job(make_cfg("dataset.limit=200"))
    seed = run_job(make_cfg("dataset.limit=100", "seed=1"))
    names = [client.get_run(o.run_id).info.run_name for o in (first, other, seed)]
    assert all(re.fullmatch(r"logistic_regression-digits-fp32-bs64-[0-9a-f]{6}", n) for n in names)
    assert names[0] != names[1] and names[0] == names[2]
    hashes = [client.get_run(o.run_id).data.tags[Tag.CONFIG_HASH] for o in (first, seed)]
    assert hashes[0] != hashes[1]  # a seed is still its own config for resuming sweeps


def test_the_job_ends_with_its_run_and_how_to_open_it(store, tmp_path, client):
    done = run_cli(f"tracking.uri={store}", "model=decision_tree", "monitor=quick", "monitor.trials=2",
                   "monitor.min_window_s=0.05", "monitor.idle_s=0.05", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = client.search_runs([client.get_experiment_by_name("ecopipe").experiment_id])
    experiment = run.info.experiment_id
    assert done.stdout.strip().splitlines()[-2:] == [
        f"  run         {run.info.run_id} in {store}",
        f"  view        `mlflow ui --backend-store-uri {store}` (in a checkout: `make ui STORE=<its file>`), "
        f"then http://127.0.0.1:5000/#/experiments/{experiment}/runs?viewStateShareKey=ecopipe-headline  "
        "(every run's headline figures)",
    ]


def test_the_view_and_the_note_are_renewed_when_ecopipe_wrote_them_and_kept_when_a_user_did(client, store):
    """An experiment an older ecopipe made gets the view's link and the current view; a view or a note
    that a user wrote over them stays."""
    from ecopipe.tracking.experiment import ensure_experiment
    from ecopipe.ui_view import VIEW_TAG, view_state

    old_note = "**ecopipe**: what ML inference costs the planet. One run per job (...)"
    older = client.create_experiment("older", tags={Tag.NOTE: old_note})
    stale = {"name": "ecopipe: the headline figures", "createdAt": 1, "state": "{}", "ecopipe": 0}
    client.set_experiment_tag(older, VIEW_TAG, json.dumps(stale))
    ensure_experiment(client, store, "older")
    tags = client.get_experiment(older).tags
    assert tags[Tag.NOTE].startswith(
        f"**[Open the headline view](#/experiments/{older}/runs?viewStateShareKey="
    )
    assert json.loads(json.loads(tags[VIEW_TAG])["state"]) == view_state()
    # The UI's "Override saved view" writes the user's own (no ecopipe mark); a user's note is theirs.
    users_view = json.dumps({"name": "mine", "createdAt": 2, "state": json.dumps({"selectedColumns": []})})
    client.set_experiment_tag(older, VIEW_TAG, users_view)
    client.set_experiment_tag(older, Tag.NOTE, "my notes")
    ensure_experiment(client, store, "older")
    tags = client.get_experiment(older).tags
    assert (tags[VIEW_TAG], tags[Tag.NOTE]) == (users_view, "my notes")
