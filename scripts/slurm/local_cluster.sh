#!/bin/bash
# A throwaway one-node SLURM cluster on this machine (munged, slurmctld, slurmd), for
# tests/test_slurm.py (`make cluster-test`). Everything it writes (munge key, slurm.conf,
# state, spool, logs, sockets) lives in one temporary folder; `stop` ends the daemons and
# the jobs they started, and removes the folder.
#
#   scripts/slurm/local_cluster.sh run CMD [ARG...]   start, run CMD with SLURM_CONF set, stop
#                                                     (also when CMD fails); CMD's exit status
#   scripts/slurm/local_cluster.sh start              start; prints the folder (SLURM_CONF=DIR/slurm.conf)
#   scripts/slurm/local_cluster.sh stop DIR           stop what `start` started in DIR, remove DIR
#
# Needs root (slurmd runs jobs as their submitter) and Debian/Ubuntu's packages below, which
# it installs with apt-get when missing (about 30 MB). The node is `localhost` with this
# machine's CPUs and memory, no GPU; jobs are tracked by process tree (no cgroups).
# Accounting (`sacct`) goes through slurmdbd to a MariaDB server of its own, listening on
# 127.0.0.1 only: SLURM 22.05 has no file-based accounting any more.
set -euo pipefail

PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
COMMANDS=(munged slurmctld slurmd slurmdbd sbatch sacct sacctmgr mariadbd mariadb-install-db mariadb)
STARTUP_SECONDS=${STARTUP_SECONDS:-60}
CLUSTER=landslide-lit-test
# A requeued job waits cred_expire seconds before it starts again (SLURM's default: 120).
REQUEUE_DELAY=${REQUEUE_DELAY:-10}

die() {
    echo "local_cluster.sh: $*" >&2
    exit 1
}

install_missing() {
    local missing=()
    for command in "${COMMANDS[@]}"; do
        command -v "$command" >/dev/null || missing+=("$command")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    command -v apt-get >/dev/null ||
        die "${missing[*]} not found and no apt-get: install SLURM and munge (packages ${PACKAGES[*]})"
    echo "local_cluster.sh: installing ${PACKAGES[*]} (missing: ${missing[*]})" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${PACKAGES[@]}" >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${PACKAGES[@]}" >/dev/null; }
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until CMD... succeeds; false after STARTUP_SECONDS.
wait_for() {
    local deadline=$((SECONDS + STARTUP_SECONDS))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

node_idle() {
    [[ $(sinfo -h -n localhost -o %t) == idle ]]
}

write_config() {
    local dir=$1 db_port=$2 password=$3 node
    # this machine's CPUs, sockets, cores and memory, as slurmd detects them
    node=$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]*//')
    local auth="AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=$REQUEUE_DELAY"
    cat >"$dir/slurm.conf" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
$auth
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$(free_port)
AccountingStoragePass=$dir/munge/munge.socket
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
NodeName=localhost NodeAddr=127.0.0.1$node State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
    # slurmdbd reads slurmdbd.conf beside slurm.conf; it holds a password: owner only
    install -m 600 /dev/null "$dir/slurmdbd.conf"
    cat >"$dir/slurmdbd.conf" <<CONF
$auth
DbdHost=localhost
DbdPort=$(sed -n 's/^AccountingStoragePort=//p' "$dir/slurm.conf")
SlurmUser=root
PidFile=$dir/slurmdbd.pid
LogFile=$dir/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=$password
StorageLoc=slurm_acct_db
CONF
}

start_database() {
    local dir=$1 port=$2 password=$3
    mariadb-install-db --no-defaults --datadir="$dir/db" --user=root --skip-test-db \
        --auth-root-authentication-method=socket >"$dir/db-install.log" 2>&1 ||
        { cat "$dir/db-install.log" >&2; return 1; }
    mariadbd --no-defaults --datadir="$dir/db" --user=root --socket="$dir/db.socket" \
        --pid-file="$dir/db.pid" --log-error="$dir/db.log" --bind-address=127.0.0.1 \
        --port="$port" --skip-name-resolve --innodb-buffer-pool-size=32M \
        </dev/null >>"$dir/db.log" 2>&1 &
    wait_for mariadb --no-defaults --socket="$dir/db.socket" -e "SELECT 1" || return 1
    mariadb --no-defaults --socket="$dir/db.socket" -e "
        CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start() {
    [[ $(id -u) -eq 0 ]] || die "needs root: slurmd runs each job as the user who submitted it"
    install_missing
    local dir db_port password
    dir=$(mktemp -d "${TMPDIR:-/tmp}/landslide-lit-slurm.XXXXXX")
    chmod 755 "$dir"
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool"
    chmod 700 "$dir/munge"
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
    db_port=$(free_port)
    password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    write_config "$dir" "$db_port" "$password"
    export SLURM_CONF=$dir/slurm.conf
    if ! {
        munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
            --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
            --seed-file="$dir/munge/munged.seed" &&
            start_database "$dir" "$db_port" "$password" &&
            slurmdbd &&
            wait_for sacctmgr --immediate add cluster "$CLUSTER" &&
            slurmctld -i &&
            slurmd -N localhost &&
            wait_for node_idle
    }; then
        tail -n 20 "$dir"/*.log "$dir"/munge/*.log >&2 || true
        stop "$dir"
        die "the cluster did not come up within ${STARTUP_SECONDS}s (logs above)"
    fi
    echo "$dir"
}

# Ends the process whose pid is in FILE: SIGTERM, then SIGKILL after 10 s.
end_process() {
    local file=$1 pid
    [[ -s $file ]] || return 0
    pid=$(<"$file")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

stop() {
    local dir=$1
    [[ -f $dir/slurm.conf ]] || die "$dir is not a folder made by 'local_cluster.sh start'"
    export SLURM_CONF=$dir/slurm.conf
    # cancel the jobs and wait for their step daemons (slurmstepd outlives slurmd) to end:
    # each holds a socket in the spool folder until it exits
    scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 120); do
        compgen -G "$dir/spool/localhost_*" >/dev/null || break
        sleep 0.5
    done
    if compgen -G "$dir/spool/localhost_*" >/dev/null; then
        # steps that outlived SLURM's own SIGKILL: end their processes by id
        scontrol listpids 2>/dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ {print $1}' |
            xargs -r kill -KILL 2>/dev/null || true
    fi
    end_process "$dir/slurmd.pid"
    end_process "$dir/slurmctld.pid"
    end_process "$dir/slurmdbd.pid"
    end_process "$dir/db.pid"
    end_process "$dir/munge/munged.pid"
    rm -rf "$dir"
}

run() {
    local status=0
    CLUSTER_DIR=$(start)
    trap 'stop "$CLUSTER_DIR"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    SLURM_CONF=$CLUSTER_DIR/slurm.conf LANDSLIDE_LIT_SLURM_TESTS=1 "$@" || status=$?
    return "$status"
}

case ${1:-} in
run)
    shift
    [[ $# -gt 0 ]] || die "usage: local_cluster.sh run CMD [ARG...]"
    run "$@"
    ;;
start) start ;;
stop)
    [[ $# -eq 2 ]] || die "usage: local_cluster.sh stop DIR"
    stop "$2"
    ;;
*) die "usage: local_cluster.sh run CMD [ARG...] | start | stop DIR" ;;
esac
