# Shared by cluster/up.sh and cluster/down.sh: where the local cluster keeps its state, and its ports.
# Everything lives under $ECOPIPE_CLUSTER_DIR (default: .cluster/ in the checkout, git-ignored).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${ECOPIPE_CLUSTER_DIR:-$ROOT/.cluster}
VENV=${VENV:-$ROOT/.venv}
SLURMCTLD_PORT=${ECOPIPE_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${ECOPIPE_SLURMD_PORT:-6818}
SLURMDBD_PORT=${ECOPIPE_SLURMDBD_PORT:-6819}
MARIADB_PORT=${ECOPIPE_MARIADB_PORT:-53306}
POSTGRES_PORT=${ECOPIPE_POSTGRES_PORT:-55432}
MLFLOW_PORT=${ECOPIPE_MLFLOW_PORT:-5055}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
export SLURM_CONF=$STATE/slurm/slurm.conf

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The PID recorded in a pid file, if that process is alive.
running_pid() {
    local file=$1 pid
    [[ -s $file ]] || return 1
    pid=$(head -n1 "$file")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds.
wait_for() {
    local limit=$1 what=$2 deadline=$((SECONDS + $1))
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what not ready after ${limit} s (logs in $STATE/log)"
        sleep 0.5
    done
}

# A random secret, generated once and kept (mode 600) under $STATE/secrets.
secret() {
    local file=$STATE/secrets/$1
    if [[ ! -s $file ]]; then
        (umask 077 && mkdir -p "$STATE/secrets" && head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$file")
    fi
    cat "$file"
}
