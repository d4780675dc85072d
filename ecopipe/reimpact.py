"""`python -m ecopipe.reimpact`: recompute impact and ESS of logged runs for another grid, PUE or attribution.

Energy is measured once; what it means in Quebec or Virginia is arithmetic on what MLflow already
holds. Each recomputation is logged as a new run in the same experiment, linked to its original
(tag `ecopipe.reimpact_of`), carrying the original's params, inference metrics and hardware tags so
aggregation treats it like any run, with the new factors and figures beside them.

    python -m ecopipe.reimpact --run-id RUN region=FRA
    python -m ecopipe.reimpact --experiment ecopipe region=aws/us-west-2 impact.attribution=net
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ecopipe import names, report, summary
from ecopipe.config import Attribution, ConfigError, ImpactConfig, TrackingConfig
from ecopipe.config_checks import validate_impact
from ecopipe.hardware_table import hardware_profiles
from ecopipe.job import footprint_stages
from ecopipe.names import CO2E_PER_1K, IMPACT_METRICS, Metric, MetricFamily, Tag
from ecopipe.reference import UnknownRegionError
from ecopipe.stages.impact import resolve_factors
from ecopipe.tracking.experiment import search_all
from ecopipe.tracking.run import SOURCE_TAGS, JobRun
from ecopipe.tracking.store import check_tracking_uri, resolve_uri

log = logging.getLogger(__name__)


def _recomputed(key: str) -> bool:
    """A figure of the impact and ESS stages: recomputed, never copied from the original."""
    return key in IMPACT_METRICS or key.startswith(MetricFamily.HEADLINE)


def _impact_settings(run: Run, overrides: Sequence[str]) -> tuple[ImpactConfig, str]:
    """The original run's impact settings and region, with the user's overrides applied and typed."""
    bare = [o for o in overrides if "=" not in o]
    if bare:  # OmegaConf reads a bare key as null: `region` would become region None
        raise ConfigError(f"{', '.join(bare)} needs =VALUE: region=ZONE or impact.<key>=VALUE.")
    # Values read from the store are text: anyone who may write a run could plant `${oc.env:...}`, which
    # OmegaConf would resolve to the reader's own environment; none goes through OmegaConf's grammar.
    params = run.data.params
    base = OmegaConf.structured(ImpactConfig)
    for key in ImpactConfig.__dataclass_fields__:
        value = params.get(f"impact.{key}")
        if value is None or value == "None":
            continue
        if "$" in value or "\\" in value:
            raise ConfigError(f"run {run.info.run_id} holds impact.{key} = {value!r}, not a value: not read.")
        OmegaConf.update(base, key, value)
    settings = OmegaConf.merge(
        OmegaConf.create({"impact": base, "region": "WORLD"}), OmegaConf.from_dotlist(list(overrides))
    )
    given = any(o.split("=", 1)[0] == "region" for o in overrides)
    region = str(settings.region) if given else params.get("region", "WORLD")  # the run's own, as text
    unknown = set(settings) - {"impact", "region"}
    if unknown:
        raise ConfigError(
            f"{', '.join(sorted(unknown))}: re-impact takes only region=... and impact.<key>=... "
            f"(keys: {', '.join(ImpactConfig.__dataclass_fields__)})."
        )
    return OmegaConf.to_object(settings.impact), region  # type: ignore[return-value]


def reimpact_run(client: MlflowClient, run: Run, overrides: Sequence[str]) -> str:
    """Log the recomputed run; return its id."""
    impact_cfg, region = _impact_settings(run, overrides)
    validate_impact(impact_cfg)
    needed = (
        names.energy_per_1k(impact_cfg.attribution.value),
        Metric.EFFECTIVE_PARAMETERS,
        Metric.WINDOW_S,
        Metric.SAMPLES,
    )
    missing = [key for key in needed if key not in run.data.metrics]
    if missing:
        raise ConfigError(
            f"run {run.info.run_id} ({run.info.status}) has no {', '.join(missing)}: only a finished job run "
            f"can be re-impacted" + (" (net needs an idle baseline)" if "net" in missing[0] else "") + "."
        )
    tags = run.data.tags
    tier = tags.get(Tag.TIER, "datacenter")
    factors = resolve_factors(impact_cfg, region, tier)
    metrics = run.data.metrics
    profile = hardware_profiles().get(tags.get(Tag.HARDWARE_KEY, ""))
    embodied = profile.embodied_kgco2e if impact_cfg.embodied and profile else None
    impact, ess, stage_metrics = footprint_stages(
        metrics, factors, metrics[Metric.EFFECTIVE_PARAMETERS], embodied, impact_cfg.lifetime_years
    )
    # The config hash stays with the measured run: a re-impact must not make a sweep skip a job. The
    # impact stage's tags (region, factor sources) are not dropped: the new ones replace them below.
    dropped = ("mlflow.", Tag.CONFIG_HASH, Tag.PID, Tag.HOST)
    kept_tags = {k: v for k, v in tags.items() if not k.startswith(dropped)}
    new = client.create_run(
        run.info.experiment_id,
        run_name=f"{run.info.run_name}@{factors.region}",
        tags={**kept_tags, **SOURCE_TAGS, Tag.REIMPACT_OF: run.info.run_id, **report.impact_tags(impact)},
    )
    out = JobRun(client, new.info.run_id)
    params = dict(run.data.params) | {"region": region}
    params |= {
        f"impact.{k}": v
        for k, v in OmegaConf.to_container(OmegaConf.structured(impact_cfg), enum_to_str=True).items()
    }
    out.log_params(params)
    inference_only = {k: v for k, v in metrics.items() if not _recomputed(k)}
    out.log_metrics(inference_only | stage_metrics)
    label = tags.get(Tag.FIGURES, "figures of unstated source")
    answer = summary.compact_answer(metrics | stage_metrics, label, factors.attribution)
    out.set_description(
        f"{answer}\n\nRe-impact of run {run.info.run_id} for region {factors.region}: that run's measured "
        "energy, through the impact and ESS stages anew."
    )
    client.set_terminated(new.info.run_id, "FINISHED")
    co2e = report.metric_band(stage_metrics, CO2E_PER_1K)
    log.info(
        "re-impact of %s in %s: %.4g gCO2e (%.3g-%.3g) per 1,000 inferences, %s; ESS %.4g (run %s)",
        run.info.run_id,
        factors.region,
        co2e.point,
        co2e.low,
        co2e.high,
        tags.get(Tag.FIGURES, "source not recorded"),
        ess.ess,
        new.info.run_id,
    )
    return new.info.run_id


def _targets(client: MlflowClient, run_id: str | None, experiment: str | None) -> list[Run]:
    if run_id:
        return [client.get_run(run_id)]
    found = client.get_experiment_by_name(experiment or "")
    if found is None:
        raise ConfigError(f"--experiment {experiment}: no such experiment in this tracking store.")
    runs = search_all(client, [found.experiment_id], "attributes.status = 'FINISHED'")
    measured = names.energy_per_1k(Attribution.gross.value)
    return [r for r in runs if Tag.REIMPACT_OF not in r.data.tags and measured in r.data.metrics]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecopipe.reimpact", description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--run-id", help="one run to recompute")
    target.add_argument("--experiment", help="every finished job run of this experiment")
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here")
    parser.add_argument("overrides", nargs="*", help="region=ZONE and impact.<key>=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    uri = resolve_uri(TrackingConfig(uri=args.tracking_uri))
    try:
        check_tracking_uri(uri)
        client = MlflowClient(uri)
        runs = _targets(client, args.run_id, args.experiment)
        for run in runs:
            print(reimpact_run(client, run, args.overrides))
    except (ConfigError, UnknownRegionError, OmegaConfBaseException, MlflowException) as error:
        print(f"ecopipe.reimpact: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
