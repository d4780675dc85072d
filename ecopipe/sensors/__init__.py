"""Energy sensors: NVML, RAPL, estimates and a test double, behind one interface."""
