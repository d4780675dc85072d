"""One job = one grid point: validate, then inference -> impact -> ESS, all recorded in MLflow."""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ecopipe import names, report, summary, ui_view
from ecopipe.config import Config, ConfigError, Phase, RaplAttribution, TrackingConfig
from ecopipe.config_checks import check_known_keys, validate
from ecopipe.dataset_choice import dataset_choice
from ecopipe.hardware import (
    DeviceProfile,
    MeteredGpus,
    device_profile,
    environment,
    gpu_environment,
    metered_gpus,
)
from ecopipe.monitor.energy import Bound, machine_meter
from ecopipe.names import CO2E_PER_1K, WATER_PER_1K, Tag, TagFamily
from ecopipe.results import Findings, InferenceResult
from ecopipe.sensors.cpu_power import CpuPower
from ecopipe.sensors.estimated import cpu_power
from ecopipe.stages.ess import SustainabilityResult, run_ess
from ecopipe.stages.impact import ImpactFactors, ImpactResult, resolve_factors, run_impact
from ecopipe.stages.inference import run_inference
from ecopipe.stops import stop_on_signals
from ecopipe.tracking.experiment import open_experiment
from ecopipe.tracking.resume import (
    code_version,
    config_hash,
    finished_run_with_hash,
    link_reused_run,
    measured_by,
    repeat_hash,
)
from ecopipe.tracking.run import JobRun, fail_run, flatten, job_run, open_run
from ecopipe.tracking.store import artifact_location, check_tracking_uri, recorded_config, resolve_uri
from ecopipe.workloads.base import ComparesArms, Workload
from ecopipe.workloads.factory import build_workload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobOutcome:
    run_id: str
    summary: str
    metrics: dict[str, float]
    skipped: bool = False  # already measured: a FINISHED run has the same config hash


@dataclass(frozen=True)
class JobPlan:
    """Everything decided before the run opens: a refusal here costs nothing."""

    cfg: Config
    workload: Workload
    profile: DeviceProfile
    factors: ImpactFactors
    gpus: MeteredGpus
    cpu: CpuPower  # what a CPU estimate charges: the CPU identified, its SPECpower coefficients


# Run names end in this many hex digits of the config's repeat hash: runs of different configs (an
# override the name's parts do not show) get different names, the seeds of one config the same.
NAME_HASH_DIGITS = 6


def job_name(cfg: Config, raw: DictConfig) -> str:
    suffix = repeat_hash(raw)[:NAME_HASH_DIGITS]
    if cfg.strategy.selects:
        return f"{identity_tags(cfg)[Tag.STRATEGY]}-{cfg.pool.name}-bs{cfg.batch_size}-{suffix}"
    phase = "-prefill" if cfg.model.phase is Phase.prefill else ""
    return (
        f"{cfg.model.name}{phase}-{cfg.dataset.name}-{cfg.precision.name.value}-bs{cfg.batch_size}-{suffix}"
    )


def identity_tags(cfg: Config) -> dict[str, str]:
    """What a job is, for tables: a selection job is its pool and strategy (with its preset), not `model`."""
    strategy = cfg.strategy.name + (f":{cfg.strategy.preset}" if cfg.strategy.preset else "")
    if not cfg.strategy.selects:
        return {
            Tag.MODEL: cfg.model.name,
            Tag.DATASET: cfg.dataset.name,
            Tag.STRATEGY: strategy,
        }
    return {
        Tag.MODEL: f"pool:{cfg.pool.name}",
        Tag.DATASET: cfg.pool.dataset or "",
        Tag.STRATEGY: strategy,
    }


def data_source(cfg: Config) -> str:
    """Where the job's data comes from, for the run's Dataset entry: a hub id, a package's own set,
    or data the job makes."""
    if cfg.strategy.selects:
        return f"pool {cfg.pool.name}"
    hub = f" {cfg.dataset.hf_id}" + (f" ({cfg.dataset.hf_config})" if cfg.dataset.hf_config else "")
    return cfg.dataset.source.value + (hub if cfg.dataset.hf_id else "") + f", split {cfg.dataset.split}"


def record_refusal(raw: DictConfig, error: Exception) -> str:
    """In a sweep, a job refused before it started still leaves a FAILED run, so tables list it."""
    tracking: TrackingConfig = OmegaConf.to_object(raw.tracking)  # type: ignore[assignment]
    try:
        cfg: Config = OmegaConf.to_object(raw)  # type: ignore[assignment]
        name, tags = job_name(cfg, raw), identity_tags(cfg) | {Tag.PRECISION: cfg.precision.name.value}
    except Exception:  # the config itself is what was refused: name the job from its raw keys
        name = f"{raw.model.name}-{raw.dataset.name}-{raw.precision.name}-bs{raw.batch_size}"
        name += f"-{repeat_hash(raw)[:NAME_HASH_DIGITS]}"
        tags = {
            Tag.MODEL: raw.model.name,
            Tag.DATASET: raw.dataset.name,
            Tag.PRECISION: str(raw.precision.name),
        }
    run = open_run(tracking, name, tags | {Tag.CONFIG_HASH: config_hash(raw)})
    fail_run(run, error)
    return run.run_id


def plan_job(raw: DictConfig) -> JobPlan:
    check_known_keys(raw)
    cfg: Config = OmegaConf.to_object(raw)  # type: ignore[assignment]
    validate(cfg)
    artifact_location(resolve_uri(cfg.tracking), cfg.tracking.experiment, cfg.tracking.artifact_location)
    check_tracking_uri(resolve_uri(cfg.tracking))  # before the model is built: a bad store wastes it
    workload = build_workload(cfg)
    simulated_gpu = cfg.monitor.fake_gpu_watts is not None
    profile = device_profile(cfg.hardware, workload.device, simulated_gpu)
    factors = resolve_factors(cfg.impact, cfg.region, profile.tier)
    gpus = metered_gpus(workload.device, cfg.monitor.fake_gpu_watts)
    try:
        cpu = cpu_power(cfg.hardware.cpu_model, cfg.hardware.cpu_microarch)
    except ValueError as error:  # an unknown hardware.cpu_microarch: the message names the key
        raise ConfigError(str(error)) from None
    return JobPlan(cfg, workload, profile, factors, gpus, cpu)


def _measure(plan: JobPlan, run: JobRun) -> InferenceResult:
    cfg = plan.cfg
    meter = machine_meter(
        plan.gpus.indices,
        cfg.monitor.fake_gpu_watts,
        plan.workload.synchronize,
        cfg.monitor.gpu_sensor.sources,
        cpu_power=plan.cpu,
        ram_estimate=cfg.monitor.ram_estimate.value,
        rapl=cfg.monitor.rapl,
        unmetered_gpu=plan.gpus.unmetered,
        rapl_job_share=cfg.monitor.rapl_attribution is RaplAttribution.job_share,
        whole_gpu=plan.gpus.whole_gpu,
    )
    meter.open()
    run.set_tags(report.meter_tags(meter, plan.workload.device) | report.mig_tags(plan.gpus.mig_share, meter))
    try:
        return run_inference(
            plan.workload,
            meter,
            cfg.monitor,
            cfg.batch_size,
            plan.gpus.indices,
            record=lambda metrics, step: run.log_metrics(metrics, step=step),
            idle_key=f"{identity_tags(cfg)[Tag.MODEL]}:{cfg.precision.name.value}",
        )
    finally:
        meter.close()


def _log_inference(
    run: JobRun, workload: Workload, inference: InferenceResult
) -> tuple[dict[str, float], Findings]:
    with tempfile.TemporaryDirectory() as folder:
        findings = (
            workload.findings(inference, Path(folder)) if isinstance(workload, ComparesArms) else Findings()
        )
        for path in findings.files:
            relative = path.parent.relative_to(folder).as_posix()
            run.log_file(path, None if relative == "." else relative)
    metrics = report.inference_metrics(inference) | findings.metrics
    run.log_metrics(metrics)
    if inference.trace is not None:
        run.log_frame_csv(inference.trace.samples, "power_trace.csv")
        run.log_system_metrics(inference.trace.samples, inference.trace.started_at)
    run.set_tags(
        {
            **report.source_tags(inference),
            Tag.DTYPE: inference.facts.dtype,
            Tag.WEIGHTS: inference.facts.weights,
            names.WORKLOAD_PHASE: inference.facts.phase and inference.facts.phase.value,
            # Short facts (weights source, quantisation method, tokenizer...) as tags; curves stay artifacts.
            **{
                TagFamily.WORKLOAD.of(k): v
                for k, v in inference.facts.extra.items()
                if isinstance(v, str | int | float)
            },
        }
    )
    return metrics, findings


# The impact stage's headline figures: each must be a number, or the run fails saying why.
FOOTPRINT_FIGURES = (CO2E_PER_1K, WATER_PER_1K)


def footprint_stages(
    metrics: Mapping[str, float],
    factors: ImpactFactors,
    effective_parameters: float,
    embodied_kgco2e: float | None,
    lifetime_years: float | None,
) -> tuple[ImpactResult, SustainabilityResult, dict[str, float]]:
    """Impact and ESS from logged inference metrics alone: shared by jobs and re-impacts. Computed at
    each bound of the energy's band and the factors' ranges; the point's results are returned."""
    stages = {}
    for bound in Bound:
        basis = report.energy_basis(metrics, factors.attribution, bound)
        impact = run_impact(basis, factors.at(bound), embodied_kgco2e, lifetime_years)
        stages[bound] = (impact, run_ess(effective_parameters, impact))
    stage_metrics = report.stage_metrics(stages)
    impact, ess = stages[Bound.POINT]
    # A figure that is not a number (an overflow, an energy reading that is not one) would be dropped by
    # the store and read as missing: fail with the reason.
    overflowed = [k for k in FOOTPRINT_FIGURES if not math.isfinite(stage_metrics.get(k, 0.0))]
    if overflowed:
        raise ValueError(
            f"{', '.join(overflowed)} not finite: {factors.carbon_intensity.value:g} g/kWh, PUE "
            f"{factors.pue.value:g}, WUE {factors.wue.value:g} L/kWh, EWIF {factors.ewif.value:g} L/kWh "
            "give no number with this energy."
        )
    return impact, ess, stage_metrics | report.headline_metrics({**metrics, **stage_metrics})


def run_job(raw: DictConfig, resume: bool = False, overrides: Sequence[str] | None = None) -> JobOutcome:
    """Everything that can be refused is refused before the MLflow run opens or anything loads.

    With `resume` (sweeps), a job whose config already has a FINISHED run is skipped unless rerun=true.
    `overrides` (the command line's) tell a data set the user named from the model's default one;
    without them (a config composed by a caller) the data set is taken as configured.
    """
    with stop_on_signals():  # SIGTERM / SIGINT end the run KILLED, after every clean-up on the way out
        return _run_job(raw, resume, overrides)


def _run_job(raw: DictConfig, resume: bool, overrides: Sequence[str] | None) -> JobOutcome:
    raw, data_choice = dataset_choice(raw, overrides)
    log.info("data set: %s", data_choice)
    plan = plan_job(raw)
    cfg, profile = plan.cfg, plan.profile
    digest = config_hash(raw)
    if resume and not cfg.rerun:
        client, experiment = open_experiment(cfg.tracking)
        done = finished_run_with_hash(client, experiment, digest, profile.detected_name)
        other_code = done is not None and measured_by(done) != code_version()
        if other_code and cfg.rerun_other_version:
            log.info(
                "%s was measured in run %s by code %s; this is %s: measured again (rerun_other_version=true)",
                job_name(cfg, raw), done.info.run_id, measured_by(done), code_version(),
            )  # fmt: skip
        elif done is not None:
            name, run_id = job_name(cfg, raw), done.info.run_id
            if other_code:
                log.warning(
                    "%s reused from run %s, which code %s measured (this is %s): rerun_other_version=true "
                    "measures it again", name, run_id, measured_by(done), code_version(),
                )  # fmt: skip
            else:
                log.info("%s already measured in run %s: reused (rerun=true measures again)", name, run_id)
            link_reused_run(client, done, name)
            return JobOutcome(run_id, f"skipped: already measured in run {run_id}", {}, skipped=True)
    env = environment() | gpu_environment(plan.gpus.indices)
    name = job_name(cfg, raw)
    tags = {
        **identity_tags(cfg),
        Tag.PRECISION: cfg.precision.name.value,
        Tag.HARDWARE: profile.name,
        Tag.HARDWARE_KEY: profile.key,
        Tag.HARDWARE_DETECTED: profile.detected_name,
        Tag.TIER: profile.tier,
        Tag.POOL: cfg.pool.name,
        Tag.DEVICE: plan.workload.device,
        Tag.CONFIG_HASH: digest,
        Tag.DATASET_CHOICE: data_choice,
        Tag.CODE_VERSION: code_version(),
        **report.cpu_tags(plan.cpu),
        **{TagFamily.ENV.of(k): v for k, v in env.items()},
    }
    if cfg.impact.embodied and profile.embodied_kgco2e is None:
        log.warning(
            "impact.embodied=true, but no embodied carbon is published for %s: none is added.", profile.name
        )
        tags[Tag.EMBODIED] = "unknown"
    with job_run(cfg.tracking, name, tags) as run:
        info = run.client.get_run(run.run_id).info
        log.info("run %s; its artifacts go to %s", run.run_id, info.artifact_uri)
        recorded = recorded_config(raw)
        run.log_params(flatten(OmegaConf.to_container(recorded, resolve=True, enum_to_str=True)))
        run.log_text(OmegaConf.to_yaml(recorded, resolve=True), "config.yaml")
        run.log_dict({"environment": env, "hardware": asdict(profile)}, "environment.json")
        # A selection job runs its pool's data (dataset= is not read): its entry and digest are the pool's.
        data_config = raw.pool if cfg.strategy.selects else raw.dataset
        run.log_dataset(
            tags[Tag.DATASET] or cfg.pool.name,
            data_source(cfg),
            OmegaConf.to_container(data_config, resolve=True),
        )
        inference = _measure(plan, run)
        # Logged before impact runs, so a later failure keeps what was measured.
        metrics, findings = _log_inference(run, plan.workload, inference)
        impact, _, stage_metrics = footprint_stages(
            metrics,
            plan.factors,
            inference.facts.effective_parameters,
            profile.embodied_kgco2e if cfg.impact.embodied else None,
            cfg.impact.lifetime_years,
        )
        run.log_metrics(stage_metrics)
        run.set_tags(report.impact_tags(impact) | report.result_tags(inference))
        figures = {**metrics, **stage_metrics}
        text = summary.summary(
            name, profile, inference, impact, figures, data_choice, cfg.monitor.target_rel_ci, plan.cpu
        )
        text = "\n".join([text, *findings.summary])
        run.log_text(text, "summary.txt")
        run.set_description(
            summary.description(
                text, summary.compact_answer(figures, inference.figures_label, plan.factors.attribution)
            )
        )
    print(text)
    print(ui_view.where(run.run_id, info.experiment_id, resolve_uri(cfg.tracking)))
    return JobOutcome(run.run_id, text, metrics | stage_metrics)
