#!/usr/bin/env bash
# A real single-node SLURM cluster on 127.0.0.1, for testing the workflow's SLURM profile (tests/test_slurm.py).
#
#   scripts/slurm_local.sh start DIR    # DIR new or empty: install (apt) if needed, then start munge, MariaDB,
#                                       # slurmdbd, slurmctld and slurmd
#   source DIR/env                      # SLURM_CONF for sbatch/squeue/sacct (and snakemake --profile ...)
#   scripts/slurm_local.sh stop DIR     # cancel leftover jobs, stop every daemon it started, by its recorded PID
#
# Every file (configuration, state, database, logs, PIDs) lives in DIR; every daemon listens on 127.0.0.1 only, on free
# ports picked at start. Accounting runs for real (slurmdbd + MariaDB) because the SLURM executor plugin's default
# job-status check and its account validation both ask the accounting database (`sacct`, `sacctmgr`), as on a real
# site; without accounting, `sacct` has been seen to block and the plugin with it (shared/FACTS.md).
# Needs root (it re-runs itself with `sudo -n` otherwise) and Debian's packages.
#
# Knobs (environment): SLURM_LOCAL_CPUS, SLURM_LOCAL_MEM_MB (the node's declared size; see write_slurm_conf),
# SLURM_LOCAL_ACCOUNT (the account created for the submitting user, default asrflow), SLURM_LOCAL_PARTITION (debug).
set -Eeuo pipefail  # -E: the ERR trap in start() also fires inside the functions it calls

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
CLUSTER=asrflowtest
ACCOUNT=${SLURM_LOCAL_ACCOUNT:-asrflow}
PARTITION=${SLURM_LOCAL_PARTITION:-debug}
export PATH="/usr/sbin:/sbin:$PATH"

die() { echo "slurm_local: $*" >&2; exit 1; }
log() { echo "slurm_local: $*" >&2; }

usage() { die "usage: $0 start|stop DIR"; }

# Poll `cmd` until it succeeds; on timeout show the daemon's log, which says why it did not come up.
wait_for() {
    local what=$1 seconds=$2 logfile=$3; shift 3
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            [[ -f $logfile ]] && tail -n 30 "$logfile" >&2
            die "$what did not come up within ${seconds}s (log: $logfile)"
        fi
        sleep 0.5
    done
}

# --- install ----------------------------------------------------------------------------------------------------------

have_binaries() {
    local bin
    for bin in slurmctld slurmd slurmdbd sbatch sacct sacctmgr munged mariadbd mariadb-install-db; do
        command -v "$bin" >/dev/null || return 1
    done
}

install_packages() {
    have_binaries && return
    log "installing ${PACKAGES[*]} (apt-get)"
    # The packages' maintainer scripts would start the system's own munge/MariaDB/SLURM services; this harness starts
    # private instances instead, so deny service starts during the install (the usual container policy-rc.d).
    local policy=/usr/sbin/policy-rc.d added_policy=
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
    fi
    local install=(apt-get install -y -q --no-install-recommends "${PACKAGES[@]}")
    local status=0
    DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null; } || status=$?
    [[ -n $added_policy ]] && rm -f "$policy"
    ((status == 0)) || die "apt-get install ${PACKAGES[*]} failed ($status)"
    have_binaries || die "installed ${PACKAGES[*]} but some binaries are still missing"
}

# --- configuration ----------------------------------------------------------------------------------------------------

# CommunicationParameters=NoInAddrAny (below) binds slurmd, slurmdbd and srun to the address this machine's hostname
# resolves to: refuse to start where that is not a loopback address rather than listen on the network.
check_hostname_is_loopback() {
    local address
    address=$(getent ahostsv4 "$(hostname)" | awk 'NR == 1 {print $1}')
    [[ $address == 127.* ]] ||
        die "hostname $(hostname) resolves to ${address:-nothing}, not 127.x; map it to 127.0.0.1 in /etc/hosts"
}

# Four free TCP ports on 127.0.0.1 (slurmctld, slurmd, slurmdbd, MariaDB), so a system SLURM or MySQL never clashes.
free_ports() {
    python3 - <<'EOF'
import socket
sockets = [socket.socket() for _ in range(4)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))
EOF
}

write_slurm_conf() {
    local dir=$1 ctld_port=$2 slurmd_port=$3 dbd_port=$4
    # The node is declared at least 8 CPUs and 16 GB whatever the machine has (config_overrides: slurmd reports what
    # is configured), so the workflow's real per-rule requests (4 threads to pretrain, 8 GB to train) are schedulable
    # on a 2-core CI runner and independent jobs run side by side. Nothing is enforced (no cgroups): jobs share cores.
    local cpus=${SLURM_LOCAL_CPUS:-$(($(nproc) > 8 ? $(nproc) : 8))}
    local mem_mb=${SLURM_LOCAL_MEM_MB:-$(awk '/MemTotal/ {m = int($2 / 1024); print (m > 16384 ? m : 16384)}' \
        /proc/meminfo)}
    cat >"$dir/etc/slurm.conf" <<EOF
# Written by scripts/slurm_local.sh: a single-node test cluster on 127.0.0.1.
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmctldParameters=enable_configless
# Listen on the address the hostname resolves to (127.0.0.1, checked at start), not on every interface.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state/ctld
SlurmdSpoolDir=$dir/state/d
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, one job without --mem would take the whole node's memory.
DefMemPerCPU=256
# Finished jobs stay visible to squeue and scontrol for 5 minutes.
MinJobAge=300
ReturnToService=2
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
# Keep sbatch --comment (the plugin writes rule and wildcards there) in the job records.
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

write_slurmdbd_conf() {
    local dir=$1 dbd_port=$2 db_port=$3 db_password=$4
    # slurmdbd reads slurmdbd.conf next to $SLURM_CONF and refuses it unless only its SlurmUser can read it.
    (umask 077 && cat >"$dir/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
CommunicationParameters=NoInAddrAny
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
LogFile=$dir/log/slurmdbd.log
PidFile=$dir/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=$db_password
StorageLoc=slurm_acct_db
EOF
    )
}

# --- daemons ----------------------------------------------------------------------------------------------------------

record_pid() {  # name pidfile [logfile]: remember a daemon this script started
    local name=$1 pidfile=$2 logfile=${3:-$DIR/log/$1.log} pid
    wait_for "$name's PID file" 30 "$logfile" test -s "$pidfile"
    pid=$(<"$pidfile")
    kill -0 "$pid" 2>/dev/null || die "$name (PID $pid) died right after starting (log: $logfile)"
    echo "$name $pid" >>"$DIR/run/pids"
}

munge_works() { munge -n </dev/null | unmunge >/dev/null; }

start_munge() {
    # Reuse a munged that already answers (same machine-wide key); otherwise start one as the munge user.
    if munge_works 2>/dev/null; then
        log "munged already running; reusing it (not stopped by stop)"
        return
    fi
    [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    # munged runs as the munge user, who cannot enter a private DIR: it keeps the package's log and runtime folders.
    install -d -o munge -g munge -m 755 /run/munge /var/log/munge
    rm -f /run/munge/munged.pid
    runuser -u munge -- munged
    record_pid munged /run/munge/munged.pid /var/log/munge/munged.log
    wait_for munged 20 /var/log/munge/munged.log munge_works
}

start_mariadb() {
    local db_port=$1 db_password=$2 socket=$DIR/run/mysqld.sock
    # A small redo log: the throw-away database takes ~110 MB instead of ~180 MB.
    local server=(--no-defaults --user=root --datadir="$DIR/mysql" --innodb-log-file-size=16M)
    mariadb-install-db "${server[@]}" --auth-root-authentication-method=socket --skip-test-db \
        >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (log: $DIR/log/mariadb-install.log)"
    setsid mariadbd "${server[@]}" --socket="$socket" --port="$db_port" --bind-address=127.0.0.1 --skip-name-resolve \
        --skip-log-bin --innodb-lock-wait-timeout=900 --pid-file="$DIR/run/mariadbd.pid" \
        --log-error="$DIR/log/mariadbd.log" </dev/null >/dev/null 2>&1 &
    record_pid mariadbd "$DIR/run/mariadbd.pid"
    wait_for mariadbd 60 "$DIR/log/mariadbd.log" mariadb --no-defaults --socket="$socket" -e "SELECT 1"
    mariadb --no-defaults --socket="$socket" <<EOF
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_password';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
}

start_slurm() {
    local ctld_port=$1 user=$2
    slurmdbd
    record_pid slurmdbd "$DIR/run/slurmdbd.pid"
    wait_for slurmdbd 60 "$DIR/log/slurmdbd.log" sacctmgr -n show cluster
    # The cluster, an account and the submitting user in it, as on a real site (the plugin validates the account).
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="asrflow tests" organization=asrflow >/dev/null
    sacctmgr -i add user "$user" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
    slurmctld
    record_pid slurmctld "$DIR/run/slurmctld.pid"
    wait_for slurmctld 60 "$DIR/log/slurmctld.log" scontrol ping
    # Configless: slurmd fetches slurm.conf from slurmctld and caches it where commands inside jobs find it (the
    # executor plugin strips SLURM_* variables, SLURM_CONF included, before its srun inside each job).
    slurmd -N localhost --conf-server "127.0.0.1:$ctld_port"
    record_pid slurmd "$DIR/run/slurmd.pid"
    wait_for "slurmd (node localhost idle)" 60 "$DIR/log/slurmd.log" \
        bash -c '[[ $(sinfo -h -n localhost -o %t) == idle ]]'
}

start() {
    # A fresh DIR every time: a second start over old state would meet an initialised database and stale PIDs.
    [[ ! -e $DIR || -z $(ls -A "$DIR") ]] || die "$DIR is not empty: give a new folder (stop DIR first if it runs)"
    check_hostname_is_loopback
    install_packages
    mkdir -p "$DIR"/{etc,run,log,state/ctld,state/d,mysql}
    : >"$DIR/run/pids"
    local ctld_port slurmd_port dbd_port db_port db_password user=${SUDO_USER:-$(id -un)}
    read -r ctld_port slurmd_port dbd_port db_port < <(free_ports)
    db_password=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
    write_slurm_conf "$DIR" "$ctld_port" "$slurmd_port" "$dbd_port"
    write_slurmdbd_conf "$DIR" "$dbd_port" "$db_port" "$db_password"
    export SLURM_CONF=$DIR/etc/slurm.conf
    echo "export SLURM_CONF=$SLURM_CONF" >"$DIR/env"
    trap 'log "start failed at line $LINENO ($BASH_COMMAND); stopping what was started"; stop' ERR
    start_munge
    start_mariadb "$db_port" "$db_password"
    start_slurm "$ctld_port" "$user"
    trap - ERR
    log "cluster $CLUSTER up: partition $PARTITION, account $ACCOUNT, slurmctld on 127.0.0.1:$ctld_port"
    log "daemons: $(tr '\n' ' ' <"$DIR/run/pids")"
}

# --- stop -------------------------------------------------------------------------------------------------------------

# A recorded PID is still that daemon (not a process that reused the number after the daemon died).
is_running() { [[ $(cat "/proc/$2/comm" 2>/dev/null) == "$1" ]]; }

cancel_jobs() {
    # Jobs still queued or running belong to this cluster: cancel them and give slurmd time to end their steps, so
    # no slurmstepd outlives it.
    scontrol ping >/dev/null 2>&1 || return 0
    local jobs deadline=$((SECONDS + 30))
    jobs=$(squeue -h -o %i | tr '\n' ' ')
    [[ -n ${jobs// /} ]] || return 0
    scancel $jobs || true
    while [[ -n $(squeue -h -o %i 2>/dev/null) ]] && ((SECONDS < deadline)); do sleep 0.5; done
}

stop() {
    local pids=$DIR/run/pids name pid deadline
    [[ -f $pids ]] || { log "nothing recorded in $pids"; return 0; }
    export SLURM_CONF=$DIR/etc/slurm.conf
    cancel_jobs
    # TERM every daemon, last started first, then wait for all of them at once; KILL whatever outlives 30 s.
    tac "$pids" | while read -r name pid; do is_running "$name" "$pid" && kill -TERM "$pid" || true; done
    deadline=$((SECONDS + 30))
    while read -r name pid; do
        while is_running "$name" "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
        if is_running "$name" "$pid"; then
            log "$name (PID $pid) ignored TERM for 30 s; killing it"
            kill -KILL "$pid"
        fi
    done <"$pids"
    rm -f "$pids"
    # slurmd's configless cache link (see start_slurm) would point into DIR, which may be deleted next.
    [[ $(readlink /run/slurm/conf 2>/dev/null) != "$DIR"/* ]] || rm -f /run/slurm/conf
    log "stopped"
}

# --- main -------------------------------------------------------------------------------------------------------------

(($# == 2)) || usage
if ((EUID != 0)); then
    exec sudo -n --preserve-env=SLURM_LOCAL_CPUS,SLURM_LOCAL_MEM_MB,SLURM_LOCAL_ACCOUNT,SLURM_LOCAL_PARTITION "$0" "$@"
fi
DIR=$(realpath -m "$2")
case $1 in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
