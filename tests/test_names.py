"""The tracking schema (ecopipe.names): every name real jobs write is in it, and no module spells one out."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

import pytest

from ecopipe import names
from ecopipe.config import Attribution, Config
from ecopipe.names import Tag, TagFamily, declared_metric, declared_tag
from ecopipe.sensors.base import Component
from tests.conftest import FAST, run_cli
from tests.selection.conftest import QUICK
from tests.workloads.conftest import TEXT, tiny

PACKAGE = Path(names.__file__).parent
MLFLOW_OWN = {"mlflow.loggedArtifacts"}  # MLflow's log_table writes it, not ecopipe


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, set[str]]:
    """Every key a sweep (its parent and two jobs), a re-impact, a selection job and a text generation
    job write to one real store, by kind: run tags, experiment tags, metrics, params."""
    folder = tmp_path_factory.mktemp("names")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    sweep = run_cli(
        "-m", f"tracking.uri={store}", f"hydra.sweep.dir={folder / 'multirun'}", *FAST, "seed=0,1", cwd=folder
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    with sqlite3.connect(folder / "mlflow.db") as db:  # a job run: only jobs have a config hash
        (job,) = db.execute("SELECT run_uuid FROM tags WHERE key = ? LIMIT 1", (Tag.CONFIG_HASH,)).fetchone()
    again = run_cli(
        "--run-id", job, f"--tracking-uri={store}", "region=FRA", cwd=folder, module="ecopipe.reimpact"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    selection = run_cli(
        f"tracking.uri={store}",
        "strategy=cascade",
        "pool=digits_5",
        *QUICK,
        "pool.max_samples=600",
        cwd=folder,
    )
    assert selection.returncode == 0, selection.stderr[-3000:]
    generation = run_cli(f"tracking.uri={store}", *FAST, *tiny("gpt2"), *TEXT, cwd=folder)
    assert generation.returncode == 0, generation.stderr[-3000:]
    with sqlite3.connect(folder / "mlflow.db") as db:
        keys = {
            kind: {key for (key,) in db.execute(f"SELECT DISTINCT key FROM {table}")}
            for kind, table in (
                ("tags", "tags"),
                ("experiment_tags", "experiment_tags"),
                ("metrics", "metrics"),
                ("params", "params"),
            )
        }
        keys["runs"] = {status for (status,) in db.execute("SELECT DISTINCT status FROM runs")}
    return keys


def test_every_tag_and_metric_real_jobs_write_is_in_the_schema(written):
    assert written["runs"] == {"FINISHED"}
    tags = written["tags"] | written["experiment_tags"]
    assert [k for k in tags - MLFLOW_OWN if not declared_tag(k)] == []
    assert [k for k in written["metrics"] if not declared_metric(k)] == []
    # What these jobs must have written, so the check above saw each kind of writer.
    assert {Tag.REIMPACT_OF, Tag.SWEEP_ID, Tag.FIGURES, TagFamily.ENV.of("python")} <= written["tags"]
    assert {names.CO2E_PER_1K, names.MetricFamily.HEADLINE.of("energy_J_per_1k")} <= written["metrics"]
    assert any(k.startswith(names.MetricFamily.SELECTION) for k in written["metrics"])
    assert {names.Metric.JOBS, names.Metric.TRIAL_ENERGY, names.Metric.TOKENS} <= written["metrics"]


def test_params_are_the_jobs_config_keys(written):
    sections = set(Config.__dataclass_fields__)
    assert [k for k in written["params"] if k.split(".", 1)[0] not in sections] == []
    assert {str(p) for p in names.Param} <= written["params"]


def test_the_schema_refuses_names_it_lacks():
    assert not declared_tag("ecopipe.modle") and not declared_tag("energy_sources.cpu")
    assert not declared_metric("energy_per_1k_gros_j") and not declared_metric("co2e_g_per_2k")
    assert declared_metric(names.component(names.run_energy(names.NET), "gpu") + names.HIGH)


def test_the_schema_lists_the_configs_attributions_and_the_sensors_components():
    assert tuple(a.value for a in Attribution) == names.ATTRIBUTIONS
    assert tuple(sorted(c.value for c in Component)) == names.COMPONENTS


def _literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants, the literal parts of f-strings included; docstrings left out."""
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def _spells_a_name(text: str) -> bool:
    """A tag's name, or a name of a tag family (`energy_source.gpu`), also as a column of a runs frame
    (`tags.ecopipe.model`); or a metric family's prefix itself (`quality.`: `selection.json` is a file)."""
    bare = text.removeprefix("tags.").removeprefix("metrics.")
    if bare in Tag._value2member_map_ or bare.startswith(tuple(TagFamily)):
        return True
    return bare in {str(family) for family in names.MetricFamily}


def test_no_module_but_the_schema_spells_out_a_tag_name():
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != Path(names.__file__)
        for line, text in _literals(ast.parse(path.read_text()))
        if _spells_a_name(text)
    ]
    assert found == []


def test_the_static_check_finds_a_spelled_out_name():
    module = 'TAGS = {"ecopipe.model": 1, f"energy_source.{x}": 2}\n"""A docstring naming ecopipe.model."""'
    assert [text for _, text in _literals(ast.parse(module)) if _spells_a_name(text)] == [
        "ecopipe.model",
        "energy_source.",
    ]
