"""Dynamic model selection (DESIGN.md section 8): a pool of models, and strategies that pick among them.

One module per job: `benchmark` (the generated digits_hard data), `data` (each pool's data and its
four disjoint splits), `members` (the models and their temperature scaling), `costs` (each member's
price per call and per row, and the accounting of a pass), `thresholds` (threshold rules and their
tuning on validation B), `oracle` (the hindsight choice and its frontier), `runners` (a pass batch by
batch, queueing the rows a strategy passes on), `strategies/` (one module per strategy, registered
by name), `study` (savings and accuracy differences with their intervals), `pareto` (curves, areas,
the study's figure), `workload` (the study as a Workload: its strategy measured by the stage, with
every member and other strategy as arms of the same trials) and `report` (what the study found).
"""
