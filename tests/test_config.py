"""Every option of every config group composes against the typed schema; bad input is refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from ecopipe.config import CONFIG_DIR, TASK_DATA, Config, ConfigError, DataMismatchError
from ecopipe.config_checks import check_known_keys, schema_fields, validate
from ecopipe.dataset_choice import dataset_choice
from ecopipe.job import plan_job

# Job groups; `experiment` presets are added with `+experiment=` and `hydra/launcher` belongs to Hydra.
GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name not in ("experiment", "hydra"))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def fitting_partner(group: str, cfg: Config) -> str:
    """A dataset for a model option, or a model for a dataset option, so the pair validates."""
    if group == "model":
        kinds = {k.value for k in TASK_DATA[cfg.model.task]}
        fits = [
            d
            for d in options("dataset")
            if OmegaConf.load(CONFIG_DIR / "dataset" / f"{d}.yaml").kind in kinds
        ]
        return f"dataset={fits[0]}"
    tasks = [t for t, kinds in TASK_DATA.items() if cfg.dataset.kind in kinds]
    fits = [
        m
        for m in options("model")
        if OmegaConf.load(CONFIG_DIR / "model" / f"{m}.yaml").task in {t.value for t in tasks}
    ]
    return f"model={fits[0]}"


def test_groups_present():
    assert {"model", "dataset", "precision", "hardware", "monitor", "tracking"} <= set(GROUPS)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda v: str(v))
def test_every_option_composes_and_validates(make_cfg, group, option):
    raw = make_cfg(f"{group}={option}", fast=False)
    cfg = OmegaConf.to_object(raw)
    assert isinstance(cfg, Config)
    if group in ("model", "dataset"):
        cfg = OmegaConf.to_object(make_cfg(f"{group}={option}", fitting_partner(group, cfg), fast=False))
        assert getattr(cfg, group).name == option
    validate(cfg)


def grid_points(preset: str) -> list[list[str]]:
    """The jobs a preset's sweep makes, as each job's overrides (what Hydra's basic sweeper expands)."""
    params = OmegaConf.load(CONFIG_DIR / "experiment" / f"{preset}.yaml").get("hydra", {}).get("sweeper", {})
    overrides = [f"{key}={value}" for key, value in (params.get("params") or {}).items()]
    if not overrides:
        return [[]]
    (points,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
    return points


@pytest.mark.parametrize("option", options("experiment"))
def test_every_experiment_preset_validates_at_every_grid_point(make_cfg, option):
    """Each job of a preset's grid is a valid job, or a pair its grid skips on purpose (skip_mismatched).

    The offline presets' jobs are planned too (workload, device, hardware profile, impact factors): all
    that can refuse a job before it runs. The ecolyzer grid's pretrained models would need the hub.
    """
    points = grid_points(option)
    valid = 0
    for point in points:
        raw, _ = dataset_choice(make_cfg(f"+experiment={option}", *point, fast=False), point)
        cfg = OmegaConf.to_object(raw)
        assert isinstance(cfg, Config)
        try:
            validate(cfg)
        except DataMismatchError:
            assert cfg.skip_mismatched, point
            continue
        valid += 1
        if option != "ecolyzer_grid":  # offline presets: each job also gets past its workload's checks
            plan_job(raw)
    assert valid >= 1 and len(points) == {"quick": 16, "ecolyzer_grid": 63}.get(option, 1)


def test_default_config_is_offline_sklearn(make_cfg):
    cfg = OmegaConf.to_object(make_cfg(fast=False))
    assert (cfg.model.name, cfg.dataset.name, cfg.region) == ("logistic_regression", "digits", "WORLD")
    assert cfg.dataset.source.value == "sklearn"


@pytest.mark.parametrize("option", options("model"))
def test_every_model_defaults_to_data_of_its_task(make_cfg, option):
    """No model option needs a dataset= to compose into a valid job, with real or random weights."""
    for overrides in ([f"model={option}"], [f"model={option}", "model.weights=random"]):
        raw, _ = dataset_choice(make_cfg(*overrides, fast=False), overrides)
        validate(OmegaConf.to_object(raw))


HEADLINE = ["model=opt-2.7b", "precision=int8"]


def test_headline_command_measures_wikitext(make_cfg):
    raw, why = dataset_choice(make_cfg(*HEADLINE, fast=False), HEADLINE)
    cfg = OmegaConf.to_object(raw)
    validate(cfg)
    assert (cfg.model.name, cfg.dataset.name, cfg.precision.name.value) == ("opt-2.7b", "wikitext", "int8")
    assert why.startswith("wikitext (default for text_generation")


def test_headline_command_with_random_weights_runs_offline_data(make_cfg):
    overrides = [*HEADLINE, "model.weights=random", "dataset.limit=8"]
    raw, why = dataset_choice(make_cfg(*overrides, fast=False), overrides)
    cfg = OmegaConf.to_object(raw)
    validate(cfg)
    assert (cfg.dataset.name, cfg.dataset.source.value) == ("synthetic_text", "synthetic")
    assert cfg.dataset.limit == 8  # a dataset.* key still applies to the synthetic twin
    assert why.startswith("synthetic_text (default for text_generation with random weights")


def test_a_named_dataset_is_kept_with_random_weights(make_cfg):
    overrides = ["model=gpt2", "model.weights=random", "dataset=wikitext"]
    raw, why = dataset_choice(make_cfg(*overrides, fast=False), overrides)
    assert raw.dataset.name == "wikitext" and "chosen with dataset=" in why


@pytest.mark.parametrize("named", [[], ["dataset=wikitext"]])
def test_a_selection_job_names_its_pools_data_set(make_cfg, named):
    overrides = ["strategy=cascade", "pool=digits_5", *named]
    _, why = dataset_choice(make_cfg(*overrides, fast=False), overrides)
    assert why == "digits (pool digits_5's data set: strategy=cascade measures its pool's data, not dataset=)"
    _, why = dataset_choice(make_cfg("pool=digits_5", "strategy=router", fast=False), None)
    assert why.startswith("digits (pool digits_5's data set: strategy=router")
    _, why = dataset_choice(make_cfg("model=ridge", fast=False), None)
    assert why == "diabetes (as configured)"


@pytest.mark.parametrize(
    "override,needle",
    [
        ("model=no_such_model", "logistic_regression"),  # Hydra lists the available options
        ("dataset=no_such_data", "digits"),
        ("precision=fp64", "fp16"),
        ("hardware=tpu9", "h100"),
    ],
)
def test_unknown_group_option_lists_allowed(make_cfg, override, needle):
    with pytest.raises(MissingConfigException) as error:
        make_cfg(override)
    assert needle in str(error.value) and override.split("=")[1] in str(error.value)


def test_unknown_key_is_refused(make_cfg):
    with pytest.raises(ConfigCompositionException) as error:
        make_cfg("batchsize=3")
    assert "batchsize" in str(error.value)


def test_wrong_type_is_refused(make_cfg):
    with pytest.raises((ConfigCompositionException, ValidationError)) as error:
        make_cfg("batch_size=many")
    assert "batch_size" in str(error.value) or "many" in str(error.value)


@pytest.mark.parametrize(
    "override,needle",
    [
        ("batch_size=0", "batch_size=0"),
        ("batch_size=-4", "batch_size=-4"),
        ("dataset.limit=0", "dataset.limit=0"),
        ("monitor.trials=0", "monitor.trials=0"),
        ("hardware.device=gpu", "auto, cpu, cuda or cuda:N"),
        ("dataset=diabetes", "tabular_classification"),  # a classifier on regression data
        ("impact.pue=0.5", "impact.pue"),
    ],
)
def test_bad_values_fail_validation(make_cfg, override, needle):
    cfg = OmegaConf.to_object(make_cfg(override))
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert needle in str(error.value)


FLOAT_KEYS = [name for name, _, kind in schema_fields() if kind in (float, float | None)]
INT_KEYS = [name for name, _, kind in schema_fields() if kind in (int, int | None)]


def test_every_numeric_key_declares_its_range():
    """A numeric key without a Range would let NaN, infinities or negatives through unchecked."""
    assert len(FLOAT_KEYS) >= 20 and "impact.pue" in FLOAT_KEYS and "monitor.min_window_s" in FLOAT_KEYS
    undeclared = [
        name
        for name, item, kind in schema_fields()
        if name in FLOAT_KEYS + INT_KEYS and "range" not in item.metadata
    ]
    assert undeclared == []


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1.5"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_every_float_key_refuses_non_finite_and_negative(make_cfg, key, value):
    cfg = OmegaConf.to_object(make_cfg(f"{key}={value}"))
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    message = str(error.value)
    assert message.startswith(f"{key}=") and "invalid" in message, message


@pytest.mark.parametrize("key", INT_KEYS)
def test_every_int_key_refuses_negative(make_cfg, key):
    with pytest.raises(ConfigError, match=f"^{key}=-3 is invalid: it must be an integer"):
        validate(OmegaConf.to_object(make_cfg(f"{key}=-3")))


def test_ranges_admit_their_bounds(make_cfg):
    cfg = OmegaConf.to_object(
        make_cfg("impact.pue=1", "impact.carbon_intensity=0", "model.active_params_fraction=1")
    )
    validate(cfg)
    with pytest.raises(ConfigError, match="model.active_params_fraction=0.0 is invalid"):
        validate(OmegaConf.to_object(make_cfg("model.active_params_fraction=0")))


@pytest.mark.parametrize(
    "override,nearest",
    [
        ("+monitor.trails=5", "monitor.trials"),
        ("+batch_sise=3", "batch_size"),
        ("+impact.pui=1.2", "impact.pue"),
    ],
)
def test_added_typo_is_refused_with_the_nearest_key(make_cfg, override, nearest):
    raw = make_cfg(override)  # Hydra adds `+` keys even to a typed node; the schema check refuses them
    with pytest.raises(ConfigError, match=f"did you mean {nearest}\\?"):
        check_known_keys(raw)


def test_added_key_without_a_near_one_lists_the_level(make_cfg):
    with pytest.raises(ConfigError, match="keys under monitor: .*trials"):
        check_known_keys(make_cfg("+monitor.zzzzzz=1"))


@pytest.mark.parametrize(
    "override", ["+model.params.C=2.0", "+model.config_overrides={n_layer:2}", "+experiment=quick"]
)
def test_open_nodes_take_added_keys(make_cfg, override):
    check_known_keys(make_cfg(override))


def test_conf_ships_in_the_wheel(tmp_path: Path):
    """A non-editable install finds conf/: the wheel carries it as ecopipe/conf."""
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[1]
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(root),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "Warning" not in built.stdout + built.stderr  # pyproject.toml builds cleanly
    (wheel,) = tmp_path.glob("ecopipe-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "ecopipe/conf/config.yaml" in names
    assert "ecopipe/conf/model/logistic_regression.yaml" in names
    assert "ecopipe/data/grid_carbon_intensity.csv" in names
