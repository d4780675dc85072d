"""Dynamic model selection (DESIGN.md section 9): a pool of models, and strategies that pick among them.

One module per job: `data` (the pool's data and its four disjoint splits), `members` (the models and
their temperature scaling), `costs` (each member's measured energy per sample, and the accounting),
`cascade` (running and tuning confidence cascades), `router` and `oracle` (per-input choices),
`pareto` (accuracy against energy, its area, the plot), and `workload` (the strategy as a Workload,
so the inference stage measures all of it inside its windows).
"""
