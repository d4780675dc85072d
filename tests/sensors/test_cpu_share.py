"""The job's visible CPUs: its affinity mask capped by a cgroup quota (v1 and v2 trees in tmp_path)."""

from __future__ import annotations

import pytest

from ecopipe.sensors.cpu_share import visible_cpus
from tests.fakes import make_cgroup


def test_cgroup_v2_quota_caps_visible_cpus(tmp_path):
    make_cgroup(tmp_path, "/", "cpu.max", "max 100000")
    make_cgroup(tmp_path, "/job.slice", "cpu.max", "150000 100000")
    visible = visible_cpus(affinity=8, proc_cgroup="0::/job.slice\n", root=tmp_path)
    assert visible.count == pytest.approx(1.5) and "quota" in visible.note
    # A parent's cap applies to its children: /a caps at 1 CPU, /a/b has no cap of its own.
    make_cgroup(tmp_path, "/a", "cpu.max", "100000 100000")
    make_cgroup(tmp_path, "/a/b", "cpu.max", "max 100000")
    assert visible_cpus(affinity=8, proc_cgroup="0::/a/b", root=tmp_path).count == pytest.approx(1.0)
    # A quota above the affinity mask changes nothing.
    assert visible_cpus(affinity=1, proc_cgroup="0::/job.slice", root=tmp_path).count == 1.0


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    make_cgroup(tmp_path, "/cpu,cpuacct/docker/abc", "cpu.cfs_quota_us", "200000")
    make_cgroup(tmp_path, "/cpu,cpuacct/docker/abc", "cpu.cfs_period_us", "100000")
    text = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n"
    assert visible_cpus(affinity=64, proc_cgroup=text, root=tmp_path).count == pytest.approx(2.0)
    make_cgroup(tmp_path, "/cpu/x", "cpu.cfs_quota_us", "-1")  # -1: no quota
    make_cgroup(tmp_path, "/cpu/x", "cpu.cfs_period_us", "100000")
    visible = visible_cpus(affinity=64, proc_cgroup="3:cpu:/x", root=tmp_path)
    assert visible.count == 64 and "affinity" in visible.note
