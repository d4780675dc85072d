"""A table is its spec in specs.SPECS: the figures it reads, the table, its file, its section in the
summaries (unit, band, energy source) all follow from the spec, with no other edit."""

from __future__ import annotations

import pytest

from ecopipe.aggregate import aggregate
from ecopipe.aggregation import specs
from ecopipe.aggregation.specs import TableSpec
from tests.aggregation.conftest import EXPERIMENT, H100, figures

# Two figures every job logs that no table of the package reads: one plain, one energy with its band.
LATENCY = TableSpec("latency_p50", "latency_p50_s", "Latency per batch, median [s]", False, unit="s")
CPU = TableSpec(
    "energy_cpu", "energy_per_1k_gross_j.cpu", "Energy per 1,000 inferences, CPU [J]", True, unit="J"
)
CPU_FIGURES = {f"{CPU.metric}{end}": j for end, j in (("", 30.0), ("_low", 20.0), ("_high", 45.0))}


@pytest.mark.parametrize("reader", ["sql", "search"])
def test_a_spec_added_to_the_specs_is_read_built_and_written(runs, store, tmp_path, monkeypatch, reader):
    runs.job(metrics=figures(120.0) | CPU_FIGURES)  # latency_p50_s: 1 ms
    assert not {"latency_p50", "energy_cpu"} & set(aggregate(store, EXPERIMENT, reader=reader).tables)
    monkeypatch.setattr(specs, "SPECS", (*specs.SPECS, LATENCY, CPU))
    result = aggregate(store, EXPERIMENT, out_dir=tmp_path, reader=reader)
    assert result.tables["latency_p50"].loc[0, H100] == 0.001
    assert [result.tables[f"energy_cpu{end}"].loc[0, H100] for end in ("", "_low", "_high")] == [30, 20, 45]
    assert {"latency_p50.csv", "energy_cpu.csv"} <= {p.name for p in (tmp_path / "tables").iterdir()}
    summary = (tmp_path / "summary.md").read_text()
    for spec, row in (
        (LATENCY, "| logistic_regression | fp32 | 1 ms |"),
        (CPU, "| logistic_regression | fp32 | 30 J (20–45 J) |"),
    ):
        section = summary.split(f"## {spec.title}\n")[1].split("\n## ")[0]
        assert row in section, section
        assert ("| energy source |  | nvml_counter+rapl |" in section) is spec.energy  # an energy table's
    assert LATENCY.title in (tmp_path / "summary.html").read_text()
