"""MLflow tracking: one run per job, in the embedded SQLite store by default or a tracking server.

The client API (not the fluent one) is used throughout so that a sweep's parent run and its jobs,
possibly in other processes, never depend on a process-global "active run". One module per job, each
importing only those above it:

- `store`: which store, refusing one that cannot work (its scheme, SQLite file, server or database)
  before anything loads, where an experiment's artifacts go, and the store's URI as results show it
- `experiment`: the experiment, created once with its description and saved view; the client that a
  stop signal cannot cut in half; every page of a search
- `liveness`: whose run it is and whether it is alive: the process tags a run carries, the runs this
  user can vouch for, and the ending of runs whose process is gone
- `run`: the job's run: opened linked to its sweep, logged to in batches, ended FINISHED or FAILED
- `resume`: resuming and repeats: the config's hashes, the code version, the earlier run a job may
  reuse, and the sweep's links to the runs it reused
"""
