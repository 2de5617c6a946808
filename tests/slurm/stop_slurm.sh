#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start_slurm.sh started, and only those:
# each one is found by its PID file under $SLURM_TEST_DIR (default
# /tmp/fullspectrum-slurm) and is signalled only when that PID still belongs to
# a process with the expected name. Waits (bounded) for each one to exit.
# The state directory (MariaDB datadir, spool, logs) is kept, so a later
# start_slurm.sh is fast; delete it by hand for a clean slate.
set -uo pipefail

STATE="${SLURM_TEST_DIR:-/tmp/fullspectrum-slurm}"
PIDS="$STATE/pids"
status=0

# shellcheck source=tests/slurm/pids.sh
source "$(dirname "${BASH_SOURCE[0]}")/pids.sh"

stop() {
    local name=$1 pid i
    if ! pid=$(pid_of "$name"); then
        echo "$name: not running"
        rm -f "$(pidfile_of "$name")"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 60); do  # up to 30 s
        [ -d "/proc/$pid" ] || break
        sleep 0.5
    done
    if [ -d "/proc/$pid" ]; then
        echo "$name ($pid): still running after 30 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        sleep 1
    fi
    if [ -d "/proc/$pid" ]; then
        echo "$name ($pid): could not be stopped" >&2
        status=1
    else
        echo "$name ($pid): stopped"
        rm -f "$(pidfile_of "$name")"
    fi
}

# Reverse start order.
for d in slurmd slurmctld slurmdbd mariadbd munged; do
    stop "$d"
done
exit $status
