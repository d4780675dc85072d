#!/usr/bin/env bash
# `make cluster-down`: stop what cluster/up.sh started, by the PIDs it recorded, newest first. State,
# logs and secrets stay in .cluster/ for the next `make cluster-up` (delete the folder to start afresh).
set -euo pipefail
source "$(dirname "$0")/common.sh"

# stop NAME PIDFILE [GROUP]: SIGTERM (the whole process group with GROUP), then wait up to 30 s.
stop() {
    local name=$1 file=$2 group=${3:-} pid waited=0
    pid=$(running_pid "$file") || return 0
    log "stopping $name (pid $pid)"
    kill -TERM ${group:+--} "${group:+-}$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited++ > 60)); then
            log "$name did not stop in 30 s: SIGKILL"
            kill -KILL ${group:+--} "${group:+-}$pid" 2>/dev/null || true
        fi
        sleep 0.5
    done
}

stop "mlflow server" "$STATE/mlflow/mlflow.pid" group  # its workers are in its process group
if [[ -s $STATE/postgres/data/postmaster.pid ]] && running_pid "$STATE/postgres/data/postmaster.pid" >/dev/null; then
    log "stopping PostgreSQL"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STATE/postgres/data" -m fast -w stop >/dev/null
fi
stop slurmd "$STATE/slurm/slurmd.pid"
stop slurmctld "$STATE/slurm/slurmctld.pid"
stop slurmdbd "$STATE/slurm/slurmdbd.pid"
stop MariaDB "$STATE/mariadb/mysqld.pid"
stop munged "$STATE/munge/run/munged.pid"
log "down"
