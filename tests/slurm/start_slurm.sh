#!/usr/bin/env bash
# Start a real single-node SLURM cluster (munge + MariaDB + slurmdbd + slurmctld
# + slurmd) on this machine, for tests/test_slurm.py.
#
# For throwaway test machines only: needs root, installs Debian packages, and
# writes /etc/slurm/slurm.conf and /etc/slurm/slurmdbd.conf. No systemd is
# needed: every daemon is started directly and records its PID in
# $SLURM_TEST_DIR/pids (default /tmp/fullspectrum-slurm), which is what
# tests/slurm/stop_slurm.sh uses to stop exactly these daemons.
#
# The node has $SLURM_TEST_GPUS GPUs (default 2) as generic resources (gres), so
# that jobs asking for --gpus are scheduled as on a GPU cluster. Where this
# machine has no /dev/nvidiaN, placeholder device files are made (character
# devices with NVIDIA's major number 195, or plain files where mknod is not
# allowed): SLURM only needs them to exist; nothing opens them.
#
# Idempotent: daemons that are already running (by their PID file) are left
# alone; the script ends when `sinfo` shows the node idle (exit 0) or after a
# bounded wait with the daemon log tails printed (exit 1).
#
# Environment:
#   SLURM_TEST_DIR        state directory (default /tmp/fullspectrum-slurm)
#   SLURM_CLUSTER_NAME    cluster name (default fullspectrum)
#   SLURM_TEST_ACCOUNT    account created for root (default fullspectrum)
#   SLURM_TEST_PARTITION  partition name (default debug)
#   SLURM_WAIT_SECONDS    how long to wait for the idle node (default 60)
#   SLURM_TEST_GPUS       GPUs (gres) of the node (default 2)
set -euo pipefail

STATE="${SLURM_TEST_DIR:-/tmp/fullspectrum-slurm}"
CLUSTER="${SLURM_CLUSTER_NAME:-fullspectrum}"
ACCOUNT="${SLURM_TEST_ACCOUNT:-fullspectrum}"
PARTITION="${SLURM_TEST_PARTITION:-debug}"
WAIT_SECONDS="${SLURM_WAIT_SECONDS:-60}"
GPUS="${SLURM_TEST_GPUS:-2}"
NODE=localhost
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=fullspectrum-test
MYSQL_SOCK=/run/mysqld/mysqld.sock
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

PIDS="$STATE/pids"
LOGS="$STATE/log"
T0=$(date +%s)

log() { echo "[start_slurm $(($(date +%s) - T0))s] $*"; }

diagnose() {
    echo "---- diagnostics (state dir $STATE) ----" >&2
    for f in "$LOGS"/*.log "$STATE"/munge/munged.log; do
        [ -f "$f" ] || continue
        echo "==== tail -n 30 $f" >&2
        tail -n 30 "$f" >&2 || true
    done
    echo "==== daemons" >&2
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        echo "$name: $(pid_of "$name" || echo 'not running')" >&2
    done
    echo "==== sinfo" >&2
    timeout 10 sinfo -N -l >&2 2>&1 || true
}

fail() {
    echo "start_slurm.sh: ERROR: $*" >&2
    diagnose
    exit 1
}

trap 'fail "command failed at line $LINENO: $BASH_COMMAND"' ERR

# shellcheck source=tests/slurm/pids.sh
source "$(dirname "${BASH_SOURCE[0]}")/pids.sh"

running() { pid_of "$1" >/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2
    shift 2
    local end=$(($(date +%s) + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || fail "timed out after ${secs}s waiting for $what"
        sleep 0.5
    done
}

[ "$(id -u)" = 0 ] || { echo "start_slurm.sh: must run as root" >&2; exit 1; }

# ---------------------------------------------------------------- packages
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"/tmp/fullspectrum-slurm-apt.log" 2>&1; then
        apt-get update -q >>"/tmp/fullspectrum-slurm-apt.log" 2>&1
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>"/tmp/fullspectrum-slurm-apt.log" 2>&1 \
            || { tail -n 40 /tmp/fullspectrum-slurm-apt.log >&2; fail "apt-get install failed"; }
    fi
    log "packages installed"
fi

mkdir -p "$STATE" "$PIDS" "$LOGS" "$STATE/spool/ctld" "$STATE/spool/d" "$STATE/munge"
chmod 755 "$STATE" "$PIDS" "$LOGS"

# ---------------------------------------------------------------- munge
if ! running munged; then
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating munge key"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge "$STATE/munge"
    chmod 755 /run/munge
    chmod 700 /var/lib/munge /var/log/munge "$STATE/munge"
    log "starting munged (as user munge)"
    runuser -u munge -- /usr/sbin/munged \
        --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" \
        || fail "munged did not start"
    wait_for 20 "munged" bash -c 'munge -n | unmunge'
fi

# ---------------------------------------------------------------- mariadb
if ! running mariadbd; then
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld
    if [ ! -d "$STATE/mysql/mysql" ]; then
        log "initialising MariaDB datadir $STATE/mysql"
        mkdir -p "$STATE/mysql"
        chown mysql:mysql "$STATE/mysql"
        mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" \
            --auth-root-authentication-method=socket --skip-test-db \
            >"$LOGS/mariadb-install-db.log" 2>&1 || fail "mariadb-install-db failed"
    fi
    log "starting mariadbd (127.0.0.1, socket $MYSQL_SOCK)"
    # setsid execs in place (we are not a process group leader), so $! is mariadbd.
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" \
        --socket="$MYSQL_SOCK" --bind-address=127.0.0.1 --port=3306 \
        --log-error="$LOGS/mariadbd.log" --pid-file="$STATE/mysql/mariadbd.pid" \
        --innodb-buffer-pool-size=64M \
        </dev/null >>"$LOGS/mariadbd.log" 2>&1 &
    echo $! >"$PIDS/mariadbd.pid"
    wait_for 60 "mariadbd socket" mariadb-admin --no-defaults --socket="$MYSQL_SOCK" -uroot ping
fi
mariadb --no-defaults --socket="$MYSQL_SOCK" -uroot -e "
    CREATE DATABASE IF NOT EXISTS $DB_NAME;
    CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
    FLUSH PRIVILEGES;" || fail "could not create the accounting database"

# ---------------------------------------------------------------- configs
# Node line from the real hardware (slurmd -C), renamed to $NODE.
hw=$(slurmd -C | head -n 1)
hw_fields=$(echo "$hw" | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ')
[ -n "$hw_fields" ] || fail "could not parse 'slurmd -C' output: $hw"

# ---------------------------------------------------------------- GPUs (gres)
for i in $(seq 0 $((GPUS - 1))); do
    if [ ! -e "/dev/nvidia$i" ]; then
        mknod -m 666 "/dev/nvidia$i" c 195 "$i" 2>/dev/null || touch "/dev/nvidia$i"
        log "made placeholder GPU device /dev/nvidia$i"
    fi
done

mkdir -p /etc/slurm
cat >/etc/slurm/gres.conf <<EOF
# Generated by tests/slurm/start_slurm.sh (fullspectrum test cluster).
AutoDetect=off
NodeName=$NODE Name=gpu File=/dev/nvidia[0-$((GPUS - 1))]
EOF
chmod 644 /etc/slurm/gres.conf

cat >/etc/slurm/slurm.conf.new <<EOF
# Generated by tests/slurm/start_slurm.sh (fullspectrum test cluster).
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Bind to the address each daemon's host name resolves to (127.0.0.1), not to
# INADDR_ANY (slurmd: NoInAddrAny, slurmctld: NoCtldInAddrAny). slurmdbd has no
# such option in 22.05 and listens on 0.0.0.0:6819.
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# Keep sbatch --comment (the plugin writes rule_<name>[_wildcards_...]) in sacct.
AccountingStoreFlags=job_comment
# GPUs are generic resources; sacct's ReqTRES/AllocTRES then show gres/gpu=N per job.
GresTypes=gpu
AccountingStorageTRES=gres/gpu
MinJobAge=300
SlurmctldTimeout=60
SlurmdTimeout=120
InactiveLimit=0
KillWait=10
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE $hw_fields Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
mv /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf
chmod 644 /etc/slurm/slurm.conf

umask_old=$(umask)
umask 077
cat >/etc/slurm/slurmdbd.conf <<EOF
# Generated by tests/slurm/start_slurm.sh (fullspectrum test cluster).
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOGS/slurmdbd.log
PidFile=$PIDS/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
umask "$umask_old"
chown root:root /etc/slurm/slurmdbd.conf
chmod 600 /etc/slurm/slurmdbd.conf

# ---------------------------------------------------------------- slurmdbd
if ! running slurmdbd; then
    log "starting slurmdbd"
    /usr/sbin/slurmdbd || fail "slurmdbd did not start"
    wait_for 60 "slurmdbd" sacctmgr -n list cluster
fi

# ---------------------------------------------------------------- accounting
if [ -z "$(sacctmgr -n -P list cluster "$CLUSTER" format=cluster)" ]; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
if [ -z "$(sacctmgr -n -P list account "$ACCOUNT" format=account)" ]; then
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" \
        Description="fullspectrum tests" Organization=fullspectrum >/dev/null
fi
if ! sacctmgr -n -P list association user=root account="$ACCOUNT" format=account | grep -qx "$ACCOUNT"; then
    sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null
fi

# ---------------------------------------------------------------- slurmctld / slurmd
if ! running slurmctld; then
    log "starting slurmctld"
    /usr/sbin/slurmctld || fail "slurmctld did not start"
    wait_for 60 "slurmctld" scontrol ping
else
    scontrol reconfigure >/dev/null 2>&1 || true
fi
if ! running slurmd; then
    log "starting slurmd (node $NODE)"
    /usr/sbin/slurmd -N "$NODE" || fail "slurmd did not start"
fi

# ---------------------------------------------------------------- wait for idle
end=$(($(date +%s) + WAIT_SECONDS))
while :; do
    state=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n 1 || true)
    case "$state" in
        idle | mixed | allocated | completing) break ;;
    esac
    if [ "$(date +%s)" -ge "$end" ]; then
        fail "node $NODE is '${state:-unknown}', not idle, after ${WAIT_SECONDS}s"
    fi
    case "$state" in
        down* | drain*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
trap - ERR
log "SLURM is up: cluster=$CLUSTER partition=$PARTITION account=$ACCOUNT node=$NODE ($state)"
sinfo
