"""The tracking schema: every tag, metric and param name ecopipe writes to MLflow, defined once.

Tracking, the stages' reports, aggregation, re-impact, the UI's saved view and the tests import their
names from here; none writes a name as a literal. `declared_tag` and `declared_metric` say whether a
key belongs to the schema: tests/test_names.py runs real jobs, a sweep, a re-impact and a selection
job into one store and fails on any key the schema lacks. Params are the job's resolved config,
flattened (`model.name`, `monitor.trials`...): their names are the config's keys, and `Param` lists
the few that other modules read.

A name is an exact `Tag` or `Metric`, or a family: a prefix and a key (`energy_source.cpu`,
`quality.accuracy`), or a figure with the ends of its band beside it (`co2e_g_per_1k_low`).
"""

from __future__ import annotations

from enum import StrEnum
from itertools import product

# ---------------------------------------------------------------------------------------------------
# Tags


NAMESPACE = "ecopipe."  # the prefix of ecopipe's own tags


class Tag(StrEnum):
    """A run's (or, for the last group, an experiment's) tags with one fixed name."""

    # What the job ran: job.py writes them; the tables, re-impact and the saved view read them.
    MODEL = "ecopipe.model"
    DATASET = "ecopipe.dataset"
    DATASET_CHOICE = "ecopipe.dataset_choice"
    PRECISION = "ecopipe.precision"
    STRATEGY = "ecopipe.strategy"
    POOL = "ecopipe.pool"
    WEIGHTS = "ecopipe.weights"
    DTYPE = "ecopipe.dtype"
    DEVICE = "ecopipe.device"
    HARDWARE = "ecopipe.hardware"
    HARDWARE_KEY = "ecopipe.hardware_key"
    HARDWARE_DETECTED = "ecopipe.hardware_detected"
    TIER = "ecopipe.tier"
    CONFIG_HASH = "ecopipe.config_hash"
    CODE_VERSION = "ecopipe.code_version"
    OLD_COMMIT = "ecopipe.git_commit"  # what runs logged before the code version was
    EMBODIED = "ecopipe.embodied"
    # How the figures were obtained (report.py), and the impact stage's factors.
    FIGURES = "ecopipe.figures"  # measured, ESTIMATE or SIMULATED; ", WHOLE GPU" added under MIG
    TRIALS_STOP = "ecopipe.trials_stop"
    NET_NEGATIVE = "ecopipe.net_negative"
    MIG_SHARE = "ecopipe.gpu_mig_share"  # the MIG instance's share of the GPU it runs on, or "unknown"
    ENERGY_COMPLETE = "energy_complete"  # false: a CUDA job whose GPU had no sensor
    ESS_STATUS = "ecopipe.ess"  # "defined", or why not
    REGION = "ecopipe.region"
    REGION_NAME = "ecopipe.region_name"
    ATTRIBUTION = "ecopipe.attribution"
    CARBON_BASIS = "ecopipe.carbon_basis"
    CARBON_YEAR = "ecopipe.carbon_year"
    WATER_BASIS = "ecopipe.water_basis"
    REIMPACT_OF = "ecopipe.reimpact_of"  # a re-impact's measured run
    # The CPU as identified, and what an estimate charges it.
    CPU_MICROARCH = "hardware.cpu_microarch"
    CPU_MICROARCH_HOW = "hardware.cpu_microarch_identified_by"
    CPU_MICROARCH_NOTE = "hardware.cpu_microarch_note"
    CPU_POWER_COEFFICIENTS = "hardware.cpu_power_coefficients"
    # A run's life: who runs it, how it ended, which sweep it belongs to.
    KIND = "ecopipe.kind"  # "sweep" on a sweep's parent run
    SWEEP_ID = "ecopipe.sweep_id"
    SWEEP_DIR = "ecopipe.sweep_dir"
    OVERRIDES = "ecopipe.overrides"
    STATUS = "ecopipe.status"  # "killed": reaped while its process was gone
    ERROR = "ecopipe.error"
    HOST = "ecopipe.host"
    PID = "ecopipe.pid"
    PID_STARTED = "ecopipe.pid_started"
    PID_NAMESPACE = "ecopipe.pid_namespace"
    BOOT_ID = "ecopipe.boot_id"
    SLURM_JOB_ID = "ecopipe.slurm_job_id"
    SLURM_ARRAY_JOB_ID = "ecopipe.slurm_array_job_id"
    SLURM_ARRAY_TASK_ID = "ecopipe.slurm_array_task_id"
    SLURM_NODE = "ecopipe.slurm_node"
    SLURM_CLUSTER = "ecopipe.slurm_cluster"
    # MLflow's own names, as ecopipe writes or reads them.
    PARENT_RUN = "mlflow.parentRunId"
    NOTE = "mlflow.note.content"  # the run's (or experiment's) description, in markdown
    RUN_NAME = "mlflow.runName"
    USER = "mlflow.user"
    SOURCE_NAME = "mlflow.source.name"
    SOURCE_TYPE = "mlflow.source.type"
    EXPERIMENT_KIND = "mlflow.experimentKind"  # an experiment tag
    DATA_CONTEXT = "mlflow.data.context"  # a dataset input's tag


class TagFamily(StrEnum):
    """Tags named `<prefix><key>`: per component (`energy_source.gpu`), per factor, per run reused."""

    ENERGY_SOURCE = "energy_source."
    ENERGY_MEASURED = "energy_measured."
    ENERGY_RESOLUTION = "energy_resolution_s."
    ENERGY_METHOD = "energy_method."
    ENERGY_UNMETERED = "energy_unmetered."  # why the job's device has no sensor
    ENERGY_SET_ASIDE = "energy_set_aside."  # the source set aside on request (monitor.rapl=false)
    ENERGY_FALLBACK = "energy_fallback."  # the counter an estimate stands in for, and why
    ENERGY_WHOLE_GPU = "energy_whole_gpu."  # why a reading is the whole GPU's (MIG)
    FACTOR_SOURCE = "ecopipe.source."  # where each impact factor comes from
    WORKLOAD = "ecopipe.workload."  # the workload's short facts: engine, phase, quantisation...
    REUSED = "ecopipe.reused."  # on a sweep's parent: a run it reused, by id
    REUSED_OTHER_CODE = "ecopipe.reused_other_code."  # ... that another code version measured
    ENV = "env."  # the machine and package versions
    SHARED_VIEW = "mlflow.sharedViewState."  # an experiment tag: a saved view of the run list

    def of(self, key: str) -> str:
        return f"{self.value}{key}"


WORKLOAD_PHASE = TagFamily.WORKLOAD.of("phase")
WORKLOAD_ENGINE = TagFamily.WORKLOAD.of("engine")
SWEEP_KIND = "sweep"  # Tag.KIND's value on a sweep's parent run
KILLED = "killed"  # Tag.STATUS's value on a run reaped while its process was gone


def declared_tag(key: str) -> bool:
    return key in Tag._value2member_map_ or key.startswith(tuple(TagFamily))


# ---------------------------------------------------------------------------------------------------
# Metrics

LOW, HIGH = "_low", "_high"  # `<name>_low` / `<name>_high` beside a figure: the ends of its band
GROSS, NET = "gross", "net"
ATTRIBUTIONS = (GROSS, NET)  # config.Attribution's values
COMPONENTS = ("cpu", "gpu", "ram")
TOTAL = "total"
# A footprint's quantities, each per scope (`co2e_g_per_1k`, `water_l_run`).
FOOTPRINT = ("energy_it_j", "energy_facility_j", "co2e_g", "water_onsite_l", "water_offsite_l", "water_l")
SCOPES = ("per_1k", "per_inference", "run", "per_hour", "per_1k_tokens")


class Metric(StrEnum):
    """Metrics with one fixed name."""

    # The measured inference (report.inference_metrics).
    SAMPLES = "samples"
    TOKENS = "tokens"
    TOKENS_IN = "tokens_in"
    TOKENS_OUT = "tokens_out"
    TRIALS = "trials"
    WINDOW_S = "window_s"
    BATCH_SIZE_USED = "batch_size_used"  # below the batch_size param where the data held fewer
    THROUGHPUT = "throughput_per_s"
    THROUGHPUT_CI95 = "throughput_ci95_per_s"
    LATENCY_P50 = "latency_p50_s"
    LATENCY_P90 = "latency_p90_s"
    LATENCY_P99 = "latency_p99_s"
    LOAD_S = "load_s"
    LOAD_ENERGY = "load_energy_j"
    FIT_S = "fit_s"
    FIT_ENERGY = "fit_energy_j"
    PARAMETERS = "parameters"
    EFFECTIVE_PARAMETERS = "effective_parameters"
    IDLE_MEASURED = "idle_measured"
    IDLE_SETTLED = "idle_settled"
    SETTLE_S = "settle_s"
    OTHER_CPU_LOAD = "other_cpu_load"
    JOB_CPU_SHARE = "job_cpu_share"
    MONITOR_OVERHEAD = "monitor_overhead_frac"
    TRACE_SAMPLES = "trace_samples"
    PEAK_RSS = "peak_rss_mb"
    PEAK_GPU_MEMORY = "peak_gpu_memory_mb"
    # The AI Energy Score's metric: the GPU's energy alone, gross, in Wh per 1,000 queries; logged
    # where the job's GPU has an energy source (CPU energy is not its metric).
    GPU_WH_PER_1K = "gpu_energy_wh_per_1k"
    # One trial's figures, with the trial index as the step (stages/inference.py).
    TRIAL_ENERGY = "trial_energy_j"  # also per component: `trial_energy_j.cpu`
    TRIAL_ENERGY_PER_1K = "trial_energy_per_1k_j"
    TRIAL_WINDOW_S = "trial_window_s"
    TRIAL_START = "trial_start_unix_s"
    TRIAL_END = "trial_end_unix_s"
    TRIAL_SAMPLES = "trial_samples"
    TRIAL_JOB_CPU_SHARE = "trial_job_cpu_share"
    # The impact stage's factors, and its figures that have no scope.
    CARBON_INTENSITY = "carbon_intensity_g_per_kwh"
    PUE = "pue"
    WUE = "wue_l_per_kwh"
    EWIF = "ewif_l_per_kwh"
    CO2E_CI95_PER_1K = "co2e_ci95_g_per_1k"
    EMBODIED_CO2E_PER_1K = "embodied_co2e_g_per_1k"
    # The ESS stage.
    ESS = "ess"
    ESS_RUN = "ess_run"
    ECEP = "ecep_wh_per_mparam"
    EFFECTIVE_PARAMS_M = "effective_params_m"
    # A sweep's parent run.
    JOBS = "jobs"
    JOBS_FAILED = "jobs_failed"
    JOBS_REUSED = "jobs_reused"
    JOBS_SKIPPED = "jobs_skipped"


class MetricFamily(StrEnum):
    """Metrics named `<prefix><key>`, where the keys are open: a workload's quality measures, a selection
    study's arms, the headline's quality, the sampler's columns."""

    QUALITY = "quality."
    SELECTION = "selection."
    HEADLINE = "headline/"  # the MLflow UI groups metrics by the prefix before "/"
    SYSTEM = "system/"  # the power trace, as MLflow's system metrics

    def of(self, key: str) -> str:
        return f"{self.value}{key}"


def energy_per_1k(attribution: str) -> str:
    """Energy per 1,000 inferences at an attribution (gross, net), in J: the tables' energy figure."""
    return f"energy_per_1k_{attribution}_j"


def energy_per_1k_ci95(attribution: str) -> str:
    return f"energy_per_1k_{attribution}_ci95_j"


def energy_per_1k_cv(attribution: str) -> str:
    return f"energy_per_1k_{attribution}_cv"


def energy_per_1k_tokens(attribution: str) -> str:
    return f"energy_per_1k_tokens_{attribution}_j"


def run_energy(attribution: str) -> str:
    """The whole run's energy, per component (`energy_gross_j.cpu`, `.total`)."""
    return f"energy_{attribution}_j"


IDLE_ENERGY = "energy_idle_j"  # per component
IDLE_POWER = "idle_power_w"  # per component
MACHINE_ENERGY = "energy_machine_j"  # per shared component: the whole machine's, beside the job's share
TRIAL_MACHINE_ENERGY = "trial_energy_machine_j"  # the same, per trial


def footprint(quantity: str, scope: str) -> str:
    return f"{quantity}_{scope}"


# The footprint per 1,000 inferences that the summary, the tables and the headline read.
ENERGY_IT_PER_1K = footprint("energy_it_j", "per_1k")  # IT energy: before the PUE
CO2E_PER_1K = footprint("co2e_g", "per_1k")
WATER_PER_1K = footprint("water_l", "per_1k")


def component(name: str, part: str) -> str:
    """A figure per component: `energy_gross_j.cpu`, `energy_gross_j.total`."""
    return f"{name}.{part}"


def band(name: str) -> tuple[str, str, str]:
    """A figure and the ends of its band."""
    return name, f"{name}{LOW}", f"{name}{HIGH}"


def _fixed_metrics() -> frozenset[str]:
    per_attribution = [energy_per_1k, energy_per_1k_tokens, energy_per_1k_ci95, energy_per_1k_cv, run_energy]
    by_attribution = [name(a) for name, a in product(per_attribution, ATTRIBUTIONS)]
    per_component = [IDLE_ENERGY, IDLE_POWER, MACHINE_ENERGY, TRIAL_MACHINE_ENERGY, Metric.TRIAL_ENERGY]
    per_component += by_attribution
    names = {str(m) for m in Metric} | set(by_attribution)
    names |= {footprint(q, s) for q, s in product(FOOTPRINT, SCOPES)}
    names |= {component(n, p) for n, p in product(per_component, (*COMPONENTS, TOTAL))}
    return frozenset(names | {f"{n}{end}" for n in names for end in (LOW, HIGH)})


_METRICS = _fixed_metrics()


def _impact_metrics() -> frozenset[str]:
    scopeless = (
        Metric.CO2E_CI95_PER_1K,
        Metric.EMBODIED_CO2E_PER_1K,
        Metric.ESS,
        Metric.ESS_RUN,
        Metric.ECEP,
    )
    factors = (Metric.CARBON_INTENSITY, Metric.PUE, Metric.WUE, Metric.EWIF, Metric.EFFECTIVE_PARAMS_M)
    figures = [footprint(q, s) for q, s in product(FOOTPRINT, SCOPES)] + [str(m) for m in scopeless + factors]
    return frozenset(n for figure in figures for n in band(figure))


# What the impact and ESS stages write, from the inference's metrics and the factors: a re-impact
# recomputes these (and the headline) and copies the rest.
IMPACT_METRICS = _impact_metrics()


class ArmMetric(StrEnum):
    """A selection study's figures per arm, as `selection.<arm>.<name>` (`arm_metric`): those the
    tables read. The job's own strategy has them under `selection.<name>` too."""

    ACCURACY = "accuracy"
    ACCURACY_DELTA_VS_REFERENCE = "accuracy_delta_vs_reference"
    ENERGY_PER_1K = "energy_per_1k_j"
    ENERGY_PER_1K_CI95 = "energy_per_1k_ci95_j"
    SAVINGS_VS_REFERENCE = "savings_measured_vs_reference"
    SAVINGS_VS_COSTLIEST = "savings_measured_vs_costliest"


CI95_LOW, CI95_HIGH = "_ci95_low", "_ci95_high"  # beside an interval's value (a saving's 95% interval)


def arm_metric(arm: str, name: str) -> str:
    return MetricFamily.SELECTION.of(f"{arm}.{name}")


def declared_metric(key: str) -> bool:
    return key in _METRICS or key.startswith(tuple(MetricFamily))


# ---------------------------------------------------------------------------------------------------
# Params: the job's resolved config, flattened. Those other modules read by name:


class Param(StrEnum):
    BATCH_SIZE = "batch_size"
    MAX_NEW_TOKENS = "model.max_new_tokens"
    TASK = "model.task"
