"""Dynamic model selection (DESIGN.md section 9): a pool of models, and strategies that pick among them.

One module per job: `benchmark` (the generated digits_hard data), `data` (each pool's data and its
four disjoint splits), `members` (the models and their temperature scaling), `costs` (each member's
price per call and per row, and the accounting of a pass), `cascade` (threshold rules and their tuning
on validation B), `router` (per-member correctness predictors), `oracle` (the hindsight bound),
`runners` (strategies run batch by batch, queueing the rows they pass on), `study` (savings and
accuracy differences with their intervals), `pareto` (curves, areas, the study's figure) and
`workload` (the study as a Workload: its strategy measured by the stage, with every member and
other strategy as arms of the same trials).
"""
