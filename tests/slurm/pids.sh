# Shared by start_slurm.sh and stop_slurm.sh (sourced): where each daemon's PID file is, and whether the PID in it
# is still the daemon this harness started (a live process with the expected name). Needs $STATE and $PIDS.

pidfile_of() {
    case "$1" in
        munged) echo "$STATE/munge/munged.pid" ;;
        *) echo "$PIDS/$1.pid" ;;
    esac
}

pid_of() {
    local pf pid comm
    pf=$(pidfile_of "$1")
    [ -s "$pf" ] || return 1
    pid=$(tr -dc '0-9' <"$pf")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [ "$comm" = "$1" ] || return 1
    echo "$pid"
}
