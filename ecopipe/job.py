"""One job = one grid point: validate, then inference -> impact -> ESS, all recorded in MLflow."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from ecopipe import report
from ecopipe.config import Config, validate
from ecopipe.hardware import cpu_model_name, cpu_tdp_w, device_profile, environment, gpu_index
from ecopipe.monitor.energy import EnergyMeter
from ecopipe.sensors.discovery import discover_sensors
from ecopipe.stages.ess import run_ess
from ecopipe.stages.impact import resolve_factors, run_impact
from ecopipe.stages.inference import run_inference
from ecopipe.tracking import config_hash, flatten, git_commit, job_run
from ecopipe.workloads.factory import build_workload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobOutcome:
    run_id: str
    summary: str
    metrics: dict[str, float]


def job_name(cfg: Config) -> str:
    return f"{cfg.model.name}-{cfg.dataset.name}-{cfg.precision.name.value}-bs{cfg.batch_size}"


def run_job(raw: DictConfig) -> JobOutcome:
    """Everything that can be refused is refused before the MLflow run opens or anything loads."""
    cfg: Config = OmegaConf.to_object(raw)  # type: ignore[assignment]
    validate(cfg)
    workload = build_workload(cfg)
    profile = device_profile(cfg.hardware, workload.device)
    factors = resolve_factors(cfg.impact, cfg.region, profile.tier)
    index = gpu_index(workload.device)
    sensors = discover_sensors(
        gpu_indices=[] if index is None else [index],
        cpu_model=cpu_model_name(),
        cpu_tdp_w=cpu_tdp_w(),
        fake_gpu_watts=cfg.monitor.fake_gpu_watts,
    )
    meter = EnergyMeter(sensors, synchronize=workload.synchronize)
    env = environment()
    name = job_name(cfg)
    tags = {
        "ecopipe.model": cfg.model.name,
        "ecopipe.dataset": cfg.dataset.name,
        "ecopipe.precision": cfg.precision.name.value,
        "ecopipe.hardware": profile.name,
        "ecopipe.hardware_key": profile.key,
        "ecopipe.hardware_detected": profile.detected_name,
        "ecopipe.tier": profile.tier,
        "ecopipe.device": workload.device,
        "ecopipe.config_hash": config_hash(raw),
        "ecopipe.git_commit": git_commit(),
        **{f"env.{k}": v for k, v in env.items()},
    }
    with job_run(cfg.tracking, name, tags) as run:
        run.log_params(flatten(OmegaConf.to_container(raw, resolve=True, enum_to_str=True)))
        run.log_text(OmegaConf.to_yaml(raw, resolve=True), "config.yaml")
        run.log_dict({"environment": env, "hardware": profile.__dict__}, "environment.json")
        meter.open()
        try:
            inference = run_inference(workload, meter, cfg.monitor, cfg.batch_size)
        finally:
            meter.close()
        # Logged before impact runs, so a later failure keeps what was measured.
        metrics = report.inference_metrics(inference)
        run.log_metrics(metrics)
        for step, trial in enumerate(report.trial_metrics(inference)):
            run.log_metrics(trial, step=step)
        run.set_tags(
            {
                **report.source_tags(inference),
                "ecopipe.dtype": inference.facts.dtype,
                "ecopipe.weights": inference.facts.weights,
            }
        )

        impact = run_impact(
            report.energy_basis(inference, factors.attribution),
            factors,
            profile.embodied_kgco2e if cfg.impact.embodied else None,
            cfg.impact.lifetime_years,
        )
        ess = run_ess(inference.facts.effective_parameters, impact)
        stage_metrics = report.impact_metrics(impact) | report.ess_metrics(ess)
        run.log_metrics(stage_metrics)
        run.set_tags(report.impact_tags(impact))
        text = report.summary(name, profile, inference, impact, ess)
        run.log_text(text, "summary.txt")
    print(text)
    return JobOutcome(run.run_id, text, metrics | stage_metrics)
