"""A store of realistic synthetic runs for benchmarking aggregation (`make bench`), logged as jobs log.

Each run carries what a job logs: about a hundred metrics under report.py's names, sixty params, the
ecopipe, energy-source and environment tags, a sweep parent; a few percent FAILED with an error tag.
Impact, ESS and headline figures are the job's own stages applied to each run's synthetic energy.
Deterministic for a given seed. One create_run, one log_batch and one set_terminated per run.
"""

from __future__ import annotations

import hashlib
import random
import uuid

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from sqlalchemy import Engine, create_engine, inspect, text

from ecopipe import report
from ecopipe.config import ImpactConfig
from ecopipe.job import footprint_stages
from ecopipe.names import Tag
from ecopipe.results import ESTIMATE, MEASURED, TrialsStop
from ecopipe.sensors.base import Source
from ecopipe.stages.impact import resolve_factors
from ecopipe.tracking.experiment import ensure_experiment
from ecopipe.tracking.store import sqlite_path

# (model, dataset, effective parameters)
_MODELS = (
    ("logistic_regression", "digits", 650),
    ("mlp", "digits", 52_000),
    ("resnet18", "cifar10", 11_700_000),
    ("distilbert", "sst2", 66_000_000),
    ("bert-base", "sst2", 110_000_000),
    ("gpt2", "wikitext2", 124_000_000),
    ("whisper-small", "librispeech", 244_000_000),
    ("llama-3.2-1b", "wikitext2", 1_240_000_000),
)
# (name, key, tier, relative energy, energy sources gpu/cpu/ram)
_HARDWARE = (
    ("NVIDIA H100 SXM 80GB", "h100", "datacenter", 0.6, ("nvml_counter", "rapl", "estimated_per_gb")),
    ("NVIDIA A100 SXM 40GB", "a100", "datacenter", 0.8, ("nvml_counter", "rapl", "estimated_per_gb")),
    ("NVIDIA T4", "t4", "datacenter", 1.4, ("nvml_power_polling", "estimated_specpower", "estimated_per_gb")),
    ("Intel Xeon Platinum 8480+", "xeon", "datacenter", 4.0, ("none", "rapl", "estimated_per_gb")),
)
# Each data set's task, as the job logs it (model.task): the encoders on sst2 as ecopipe's embedding task.
_TASKS = {
    "digits": "tabular_classification",
    "cifar10": "image_classification",
    "sst2": "sentence_embedding",
    "wikitext2": "text_generation",
    "librispeech": "speech_recognition",
}
_PRECISIONS = {"fp32": 1.0, "fp16": 0.55, "bf16": 0.57, "int8": 0.4}
_QUALITY = {"wikitext2": "perplexity", "librispeech": "wer"}
_FITTED = {"logistic_regression", "mlp"}  # scikit-learn models, fitted by the job; the others pretrained
# WORLD-like factors, given as a job's impact.* overrides (and logged as its params)
_OVERRIDES = {"carbon_intensity": 475.0, "wue": 1.8, "ewif": 3.1}  # PUE: the tier's, with its range
_FACTORS = resolve_factors(ImpactConfig(**_OVERRIDES), "WORLD", "datacenter")
FAIL_EVERY = 33  # about 3% of runs fail


def _figures(
    rng: random.Random, params: float, hw_factor: float, p_factor: float, dataset: str, estimated: bool
) -> tuple[dict[str, float], dict[str, str]]:
    """A job's metrics, and the tags its stages set; `estimated`: some energy source is a model."""
    per_1k = (5.0 + params / 2e5) * hw_factor * p_factor * rng.uniform(0.95, 1.05)
    idle = per_1k * rng.uniform(0.2, 0.4)
    samples, trials = 1000 * rng.randint(2, 10), 5
    window = samples / 1000 * per_1k / 250.0
    m: dict[str, float] = {
        "samples": samples,
        "tokens_in": samples * 64,
        "tokens_out": samples * 16,
        "tokens": samples * 80,
        "trials": trials,
        "window_s": window,
        "batch_size_used": 32,  # the batch_size param below: the data held more than one batch
        "throughput_per_s": samples / window,
        "throughput_ci95_per_s": samples / window * 0.02,
        "latency_p50_s": 0.01,
        "latency_p90_s": 0.012,
        "latency_p99_s": 0.02,
        "load_s": 2.0,
        "load_energy_j": 300.0,
        "parameters": params,
        "effective_parameters": params,
        "idle_measured": 1.0,
        "settle_s": 3.0,  # the wait for flat power before the idle baseline
        "idle_settled": 1.0,
        "energy_per_1k_tokens_gross_j": per_1k / 80,
        "energy_per_1k_tokens_net_j": (per_1k - idle) / 80,
        "monitor_overhead_frac": 0.003,
        "trace_samples": 400,
        "peak_rss_mb": 2048.0 + params / 2**18,  # 2 GiB, plus the model's fp32 weights (4 bytes each)
    }
    for name, value in (("gross", per_1k), ("net", per_1k - idle)):
        m |= {
            f"energy_per_1k_{name}_j": value,
            f"energy_per_1k_{name}_ci95_j": value * 0.03,
            f"energy_per_1k_{name}_cv": 0.02,
        }
        m |= {f"energy_per_1k_{name}_j.{c}": value * s for c, s in (("gpu", 0.7), ("cpu", 0.2), ("ram", 0.1))}
        m[f"energy_per_1k_{name}_j.total"] = value
    for prefix, scale in (("energy_gross_j", 1.0), ("energy_idle_j", 0.3), ("energy_net_j", 0.7)):
        run = per_1k * samples / 1000 * scale
        m |= {f"{prefix}.{c}": run * s for c, s in (("gpu", 0.7), ("cpu", 0.2), ("ram", 0.1))}
        m[f"{prefix}.total"] = run
    m |= {f"idle_power_w.{c}": w for c, w in (("gpu", 60.0), ("cpu", 40.0), ("ram", 8.0))}
    m["idle_power_w.total"] = 108.0
    # Each energy figure's band, as a job logs it: an estimate's is wide, a measurement's its CI.
    low, high = (0.75, 1.4) if estimated else (0.97, 1.03)
    banded = ("energy_per_1k_gross_j", "energy_per_1k_net_j", "energy_gross_j.", "energy_net_j.",
              "energy_per_1k_tokens_", "idle_power_w.")  # fmt: skip
    ends = (("_low", low), ("_high", high))
    figures = [(k, v) for k, v in m.items() if k.startswith(banded) and not k.endswith(("_ci95_j", "_cv"))]
    m |= {f"{k}{end}": v * f for k, v in figures for end, f in ends}
    m["other_cpu_load"] = 0.02
    quality = _QUALITY.get(dataset, "accuracy")
    m[f"quality.{quality}"] = {"perplexity": 30.0, "wer": 0.08}.get(quality, 0.9) * rng.uniform(0.97, 1.03)
    # Impact, ESS and headline figures from the job's own stages, fed this run's energy: never a copy.
    impact, _, stage_metrics = footprint_stages(m, _FACTORS, params, None, None)
    tags = report.impact_tags(impact) | {Tag.FIGURES: ESTIMATE if estimated else MEASURED}
    return m | stage_metrics, tags | {Tag.TRIALS_STOP: TrialsStop.TARGET.value}


def _params(model: str, dataset: str, precision: str, hw_key: str) -> dict[str, str]:
    params = {
        "model.name": model,
        "model.task": _TASKS[dataset],
        "dataset.name": dataset,
        "precision.name": precision,
        "hardware.profile": hw_key,
        "hardware.device": "cpu" if hw_key == "xeon" else "cuda",
        "hardware.tier": "None",
        "batch_size": "32",
        "region": "WORLD",
        "seed": "0",
        "rerun": "False",
        "model.max_new_tokens": "16",
        "strategy.name": "single",
        "pool.name": "none",
    }
    params |= {f"monitor.{k}": str(v) for k, v in enumerate(range(16))}
    params |= {f"impact.{k}": str(v) for k, v in _OVERRIDES.items()} | {"impact.lifetime_years": "None"}
    params |= {"impact.attribution": "gross", "impact.embodied": "False"}
    params |= {f"model.option_{i}": str(i) for i in range(12)}
    params |= {f"dataset.option_{i}": str(i) for i in range(12)}
    return params


def _log_run(
    client: MlflowClient, rng: random.Random, experiment_id: str, parent: str, i: int, start: int
) -> None:
    model, dataset, params = _MODELS[i % len(_MODELS)]
    precision = list(_PRECISIONS)[(i // len(_MODELS)) % len(_PRECISIONS)]
    name, key, tier, hw_factor, sources = _HARDWARE[(i // (len(_MODELS) * len(_PRECISIONS))) % len(_HARDWARE)]
    components = ("gpu", "cpu", "ram")
    tags = {
        Tag.MODEL: model,
        Tag.DATASET: dataset,
        Tag.PRECISION: precision,
        Tag.HARDWARE: name,
        Tag.HARDWARE_KEY: key,
        Tag.TIER: tier,
        Tag.REGION: "WORLD",
        Tag.ATTRIBUTION: "gross",
        Tag.STRATEGY: "single",
        Tag.WEIGHTS: "fitted" if model in _FITTED else "pretrained",
        Tag.CONFIG_HASH: hashlib.sha256(f"{model}/{precision}/{key}".encode()).hexdigest()[:16],
        Tag.SWEEP_ID: parent,
        Tag.PARENT_RUN: parent,
        **{f"energy_source.{c}": s for c, s in zip(components, sources, strict=True)},
        **{
            f"energy_measured.{c}": str(s != "none" and Source(s).is_measurement).lower()
            for c, s in zip(components, sources, strict=True)
        },
        **{f"env.package_{j}": f"1.{j}.0" for j in range(12)},
    }
    estimated = any(s not in ("none", "fake") and not Source(s).is_measurement for s in sources)
    metrics, impact_tags = _figures(rng, params, hw_factor, _PRECISIONS[precision], dataset, estimated)
    failed = i % FAIL_EVERY == FAIL_EVERY - 1
    if failed:  # measured before the failure, nothing after
        metrics = {k: v for k, v in metrics.items() if k.startswith(("energy_per_1k", "samples", "window"))}
        tags[Tag.ERROR] = "RuntimeError: CUDA out of memory (synthetic)"
    else:
        tags |= impact_tags
    run_id = client.create_run(
        experiment_id, start_time=start, tags=tags, run_name=f"{model}-{dataset}-{precision}-bs32"
    ).info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), start, 0) for k, v in metrics.items()],
        params=[Param(k, v) for k, v in _params(model, dataset, precision, key).items()],
    )
    client.set_terminated(run_id, status="FAILED" if failed else "FINISHED", end_time=start + 500)


_RUN_TABLES = ("runs", "tags", "params", "metrics", "latest_metrics")


def writable_store(uri: str) -> Engine | None:
    path = sqlite_path(uri)
    if path is not None:
        return create_engine(f"sqlite:///{path}")
    return create_engine(uri) if uri.startswith("postgresql") else None


def _clone(engine: Engine, templates: list[str], n_runs: int, t0: int) -> None:
    """Copies of the logged runs, made in SQL in one transaction (SQLite or PostgreSQL): new run ids,
    later start and end times."""
    columns = {table: [c["name"] for c in inspect(engine).get_columns(table)] for table in _RUN_TABLES}
    with engine.begin() as con:
        con.execute(text("CREATE TEMPORARY TABLE clone_map (template TEXT, new TEXT, start BIGINT)"))
        con.execute(
            text("INSERT INTO clone_map VALUES (:template, :new, :start)"),
            [
                {
                    "template": templates[i % len(templates)],
                    "new": uuid.uuid4().hex,
                    "start": t0 + 1000 * (i + 1),
                }
                for i in range(len(templates), n_runs)
            ],
        )
        for table in _RUN_TABLES:
            replaced = {
                "run_uuid": "m.new",
                "start_time": "m.start",
                "end_time": "m.start + 500",
                "artifact_uri": "replace(t.artifact_uri, m.template, m.new)",
            }
            if table != "runs":
                replaced = {"run_uuid": "m.new"}
            select = ", ".join(replaced.get(c, f"t.{c}") for c in columns[table])
            con.execute(
                text(
                    f"INSERT INTO {table} ({', '.join(columns[table])}) "
                    f"SELECT {select} FROM {table} t JOIN clone_map m ON t.run_uuid = m.template"
                )
            )
    engine.dispose()


def synthetic_store(
    uri: str, n_runs: int, experiment: str = "ecopipe-bench", seed: int = 0, logged: int = 256
) -> str:
    """`n_runs` job runs under one sweep parent in `uri`; return the parent run id.

    The first `logged` runs go through MlflowClient (create_run, one log_batch, set_terminated), which
    takes some 30 ms a run on SQLite; in a `sqlite:///` or `postgresql://` store the others are copies
    of those made with SQL, new ids and times, so 10,000 runs take seconds. Other stores (a tracking
    server) get every run logged.
    """
    rng = random.Random(seed)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = ensure_experiment(client, uri, experiment)
    t0 = 1_700_000_000_000
    parent = client.create_run(
        experiment_id, start_time=t0, run_name="sweep bench", tags={Tag.KIND: "sweep"}
    ).info.run_id
    engine = writable_store(uri)
    direct = n_runs if engine is None else min(n_runs, logged)
    for i in range(direct):
        _log_run(client, rng, experiment_id, parent, i, t0 + 1000 * (i + 1))
    client.set_terminated(parent, status="FINISHED", end_time=t0 + 1000 * (n_runs + 1))
    if direct < n_runs:
        assert engine is not None
        found = client.search_runs(
            [experiment_id], f"tags.`ecopipe.sweep_id` = '{parent}'", max_results=direct
        )
        templates = [r.info.run_id for r in sorted(found, key=lambda r: r.info.start_time)]
        _clone(engine, templates, n_runs, t0)
    return parent
