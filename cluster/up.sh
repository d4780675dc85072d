#!/usr/bin/env bash
# `make cluster-up`: a one-node SLURM cluster (munge, slurmdbd on MariaDB for accounting, slurmctld,
# slurmd), PostgreSQL, and an MLflow tracking server with basic-auth on PostgreSQL, on this machine,
# as root. State, logs and secrets under .cluster/ (git-ignored). Idempotent: what already runs (by
# its pid file) is reused. Source .cluster/cluster.env to use it; `make cluster-down` stops it all.
set -euo pipefail
source "$(dirname "$0")/common.sh"

[[ $(id -u) == 0 ]] || die "run as root (the daemons run as root, PostgreSQL as its own user)"

install_packages() {
    local missing=0 cmd
    for cmd in slurmctld slurmd slurmdbd sbatch sacct munged mariadbd mariadb-install-db; do
        command -v "$cmd" >/dev/null || [[ -x /usr/sbin/$cmd ]] || missing=1
    done
    [[ -n $PG_BIN ]] || missing=1
    ((missing)) || return 0
    log "installing slurmctld slurmd slurmdbd slurm-client munge mariadb-server postgresql (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # Other processes may hold the dpkg lock for a while: wait for it rather than fail.
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        slurmctld slurmd slurmdbd slurm-client munge mariadb-server postgresql >/dev/null
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
}

start_munge() {
    local dir=$STATE/munge
    running_pid "$dir/run/munged.pid" >/dev/null && return
    mkdir -p "$dir/run" && chmod 755 "$dir" "$dir/run"  # clients must reach the socket; the key is 600
    [[ -s $dir/munge.key ]] || mungekey --create --keyfile="$dir/munge.key" --bits=1024
    munged --key-file="$dir/munge.key" --socket="$dir/run/munge.socket" --pid-file="$dir/run/munged.pid" \
        --log-file="$STATE/log/munged.log" --seed-file="$dir/munged.seed"
    wait_for 10 munged bash -c "munge -S '$dir/run/munge.socket' -n | unmunge -S '$dir/run/munge.socket'"
}

mariadb_sql() { mariadb --no-defaults -S "$STATE/mariadb/mysqld.sock" -u root; }

start_mariadb() {  # slurmdbd's store: SLURM accounting, so that sacct (which submitit polls) answers
    local dir=$STATE/mariadb
    running_pid "$dir/mysqld.pid" >/dev/null && return
    mkdir -p "$dir"
    if [[ ! -d $dir/data/mysql ]]; then
        mariadb-install-db --no-defaults --user=root --datadir="$dir/data" --auth-root-authentication-method=socket \
            --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1
    fi
    mariadbd --no-defaults --user=root --datadir="$dir/data" --socket="$dir/mysqld.sock" \
        --pid-file="$dir/mysqld.pid" --bind-address=127.0.0.1 --port="$MARIADB_PORT" \
        --log-error="$STATE/log/mariadb.log" --innodb-buffer-pool-size=64M >/dev/null 2>&1 &
    wait_for 60 MariaDB bash -c "echo 'SELECT 1' | mariadb --no-defaults -S '$dir/mysqld.sock' -u root"
    mariadb_sql <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$(secret mariadb-slurm)';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

write_slurm_conf() {
    local dir=$STATE/slurm host cpus memory
    host=$(hostname -s)
    cpus=$(nproc)
    memory=$(($(free -m | awk '/^Mem:/ {print $2}') - 1024))  # leave 1 GiB to the system
    mkdir -p "$dir/state" "$dir/spool" && chmod 700 "$dir/state" "$dir/spool"
    (umask 077 && cat >"$dir/slurmdbd.conf") <<CONF
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/run/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$SLURMDBD_PORT
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MARIADB_PORT
StorageUser=slurm
StoragePass=$(secret mariadb-slurm)
StorageLoc=slurm_acct_db
PidFile=$dir/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
CONF
    # `debug` (the default partition) never oversubscribes a core, so an exclusive job has its
    # node to itself; `shared` lets up to 8 jobs share each core, for tests of many concurrent jobs.
    cat >"$SLURM_CONF" <<CONF
ClusterName=ecopipe
SlurmctldHost=$host(127.0.0.1)
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/run/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$SLURMDBD_PORT
AccountingStoragePass=$STATE/munge/run/munge.socket
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=shared Nodes=ALL MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
CONF
}

start_slurm() {
    local dir=$STATE/slurm
    if ! running_pid "$dir/slurmdbd.pid" >/dev/null; then
        slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
        wait_for 30 slurmdbd sacctmgr -n list cluster
    fi
    sacctmgr -i -Q add cluster ecopipe >/dev/null 2>&1 || true  # already registered: fine
    running_pid "$dir/slurmctld.pid" >/dev/null || slurmctld -f "$SLURM_CONF"
    running_pid "$dir/slurmd.pid" >/dev/null || slurmd -f "$SLURM_CONF"
    wait_for 60 "slurm node" bash -c "sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'"
    wait_for 30 "sacct" sacct -n -X -S now
}

pg_sql() { PGOPTIONS='-c client_min_messages=warning' runuser -u postgres -- "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$STATE/postgres" -p "$POSTGRES_PORT" "$@"; }

start_postgres() {
    local dir=$STATE/postgres
    mkdir -p "$dir" && chown postgres:postgres "$dir" && chmod 700 "$dir"
    if [[ ! -s $dir/data/PG_VERSION ]]; then
        runuser -u postgres -- "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth-local=peer \
            --auth-host=scram-sha-256 >"$STATE/log/postgres-initdb.log"
    fi
    # Peer authentication for the superuser only: an OS account that happens to be named like a role
    # (`mlflow`, the store's owner) gets no password-free way in; every role logs in with its password.
    runuser -u postgres -- tee "$dir/data/pg_hba.conf" >/dev/null <<HBA
local all postgres peer
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
HBA
    if ! running_pid "$dir/data/postmaster.pid" >/dev/null; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
            -o "-p $POSTGRES_PORT -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
    else
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" reload >/dev/null
    fi
    # Passwords go through stdin, never a command line. `mlflow` owns the store (the server's role);
    # `ecopipe_reader` may only read it (aggregation's direct SQL reader); `ecopipe_bench` owns a
    # scratch store for `make bench`.
    local role
    for role in mlflow ecopipe_reader ecopipe_bench; do
        pg_sql -d postgres <<SQL
SELECT 'CREATE ROLE $role LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') \gexec
ALTER ROLE $role PASSWORD '$(secret "postgres-$role")';
SQL
    done
    pg_sql -d postgres <<SQL
GRANT pg_read_all_data TO ecopipe_reader;
SELECT 'CREATE DATABASE mlflow OWNER mlflow' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow') \gexec
SELECT 'CREATE DATABASE ecopipe_bench OWNER ecopipe_bench'
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'ecopipe_bench') \gexec
SQL
    # libpq reads each role's password from here: no password in any URI or variable.
    (umask 077 && for role in ecopipe_reader ecopipe_bench; do
        echo "127.0.0.1:$POSTGRES_PORT:*:$role:$(secret "postgres-$role")"
    done >"$STATE/secrets/pgpass")
}

mlflow_healthy() {  # fails at once (exit 1 ends the wait) when the server died on start
    running_pid "$1" >/dev/null || die "mlflow server exited; see $STATE/log/mlflow.log"
    "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('$2/health', timeout=2)"
}

start_mlflow() {
    local dir=$STATE/mlflow url=http://127.0.0.1:$MLFLOW_PORT
    mkdir -p "$dir/artifacts" && chmod 700 "$dir"  # the password hashes and every run's artifacts
    if ! running_pid "$dir/mlflow.pid" >/dev/null; then
        (umask 077 && cat >"$dir/basic_auth.ini") <<INI
[mlflow]
default_permission = READ
database_uri = sqlite:///$dir/basic_auth.db
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
        # Secrets reach the server through its environment only: `ps` shows no password.
        PGPASSWORD=$(secret postgres-mlflow) PGPASSFILE=/dev/null MLFLOW_AUTH_CONFIG_PATH=$dir/basic_auth.ini \
            MLFLOW_AUTH_ADMIN_PASSWORD=$(secret mlflow-admin) \
            MLFLOW_FLASK_SERVER_SECRET_KEY=$(secret mlflow-flask) \
            setsid "$VENV/bin/mlflow" server --app-name basic-auth \
            --backend-store-uri "postgresql://mlflow@127.0.0.1:$POSTGRES_PORT/mlflow" \
            --artifacts-destination "$dir/artifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 2 \
            >"$STATE/log/mlflow.log" 2>&1 &
        echo $! >"$dir/mlflow.pid"
    fi
    wait_for 180 "mlflow server" mlflow_healthy "$dir/mlflow.pid" "$url"
    # The jobs' own account (not the admin): it creates the experiments it writes, so it manages them.
    MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=$(secret mlflow-admin) \
        ECOPIPE_JOB_PASSWORD=$(secret mlflow-ecopipe) "$VENV/bin/python" -W ignore - "$url" <<'PY'
import os, sys
from mlflow.exceptions import MlflowException
from mlflow.server.auth.client import AuthServiceClient

users = AuthServiceClient(sys.argv[1])
try:
    users.get_user("ecopipe")
except MlflowException:
    users.create_user("ecopipe", os.environ["ECOPIPE_JOB_PASSWORD"])
PY
}

write_env() {
    (umask 077 && cat >"$STATE/cluster.env") <<ENV
# source .cluster/cluster.env: SLURM commands, the tracking server and its store, with credentials.
export SLURM_CONF=$SLURM_CONF
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export MLFLOW_TRACKING_USERNAME=ecopipe
export MLFLOW_TRACKING_PASSWORD=$(secret mlflow-ecopipe)
export ECOPIPE_STORE_URI=postgresql://ecopipe_reader@127.0.0.1:$POSTGRES_PORT/mlflow
export ECOPIPE_BENCH_STORE_URI=postgresql://ecopipe_bench@127.0.0.1:$POSTGRES_PORT/ecopipe_bench
export PGPASSFILE=$STATE/secrets/pgpass
ENV
}

SECONDS=0
install_packages
[[ -x $VENV/bin/mlflow ]] || die "no $VENV: run \`make setup\` first (make cluster-up does)"
"$VENV/bin/python" -c "import psycopg, flask_wtf" 2>/dev/null || die "run: $VENV/bin/pip install -e '.[cluster]'"
# Other accounts may pass through (PostgreSQL runs as `postgres`) but list and read nothing.
mkdir -p "$STATE/log" && chmod 711 "$STATE" && chmod 700 "$STATE/log"
start_munge
start_mariadb
write_slurm_conf
start_slurm
start_postgres
start_mlflow
write_env
log "up in ${SECONDS} s: SLURM $(sinfo -h -o '%P %D %c' | tr '\n' ' ')," \
    "MLflow http://127.0.0.1:$MLFLOW_PORT (basic-auth), PostgreSQL 127.0.0.1:$POSTGRES_PORT"
log "use it: source $STATE/cluster.env"
