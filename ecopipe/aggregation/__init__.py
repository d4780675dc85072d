"""Aggregation of tracked runs into comparison tables and plots; the entry point is `ecopipe.aggregate`.

- `load`: the runs of a store as one flat frame (SQL for SQLite stores, search_runs otherwise)
- `filters`: an MLflow filter string evaluated on that frame, for the SQL reader
- `stores`: the stores given, each checked once, their runs read and combined
- `notes`: the notes above the tables: what was read, how each cell was chosen, what is missing
- `rows`: tidy job rows, their row key, the latest FINISHED run per cell, the failed runs
- `specs`: the tables that show one figure (TableSpec, SPECS), and every table's name
- `derived`: the tables computed from several figures: precision gains, decode energy, selection study
- `differences`: pairs of cells that differ in one axis, their energy ratio with a 95% interval, a verdict
- `rating`: stars by the AI Energy Score's rule (GPU Wh per 1,000 queries, equal-width bins per task)
- `label`: a rated run's label (PNG, the AI Energy Score label's size and fields, and more)
- `pivot`: a table's cells, a row per row key and a column per hardware, and read back
- `tables`: every table, built from the cells (`build`)
- `render`: CSV, Markdown and HTML files
- `plots`: ESS by hardware and precision, energy against quality
"""
