"""Aggregation of tracked runs into comparison tables and plots; the entry point is `ecopipe.aggregate`.

- `load`: the runs of a store as one flat frame (SQL for SQLite stores, search_runs otherwise)
- `filters`: an MLflow filter string evaluated on that frame, for the SQL reader
- `stores`: the stores given, each checked once, their runs read and combined
- `notes`: the notes above the tables: what was read, how each cell was chosen, what is missing
- `tables`: tidy job rows, the latest FINISHED run per cell, tables per metric, precision gains, failures
- `render`: CSV, Markdown and HTML files
- `plots`: ESS by hardware and precision, energy against quality
- `synthetic`: realistic synthetic stores for benchmarks
"""
