#!/usr/bin/env bash
# The embedded default's workflow time per trained mask, two commits side by side on this machine:
#
#   bash benchmarks/workflow_per_mask.sh OLD_COMMIT [NEW_COMMIT] [--also-members-1]
#
# Each commit is checked out into a temporary folder and runs `snakemake all --configfile config/embedded.yaml`
# from empty results with this checkout's .venv, one after the other (never at once: two cores). Prints the
# workflow seconds, the metrics.json files written, seconds per trained mask and the ratio new/old. With
# --also-members-1, NEW runs once more with train.members 1 (a job per mask), and its tables are compared with
# the chunked run's byte for byte. NEW_CONFIG=file.yaml lays a config over NEW's runs (the old commit's grid,
# say, when the embedded default's grid changed between the two).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: workflow_per_mask.sh OLD_COMMIT [NEW_COMMIT] [--also-members-1]}
NEW=${2:-HEAD}
ALSO=${3:-}
VENV_BIN="$PWD/.venv/bin"
WORK=$(mktemp -d /tmp/workflow_per_mask.XXXX)
trap 'rm -rf "$WORK"' EXIT

run() {  # run NAME COMMIT [EXTRA CONFIG FILE]: prints "seconds masks"
    local name=$1 commit=$2 extra=${3:-}
    git worktree add --quiet --detach "$WORK/$name" "$commit"
    local start=$SECONDS
    (cd "$WORK/$name" && PATH="$VENV_BIN:$PATH" "$VENV_BIN/snakemake" all --configfile config/embedded.yaml $extra \
        --cores "${CORES:-$(nproc)}" >"$WORK/$name.log" 2>&1) || { tail -n 20 "$WORK/$name.log"; exit 1; }
    local seconds=$((SECONDS - start))
    local masks
    masks=$(find "$WORK/$name/results/embedded" -name metrics.json -not -path "*/train/chunk*" | wc -l)
    echo "$seconds $masks"
}

cleanup_worktrees() { for d in "$WORK"/*/; do git worktree remove --force "$d" 2>/dev/null || true; done; }
trap 'cleanup_worktrees; rm -rf "$WORK"' EXIT

read -r old_s old_n < <(run old "$OLD")
read -r new_s new_n < <(run new "$NEW" "${NEW_CONFIG:-}")
printf '| commit | workflow s | metrics.json | s per mask |\n|---|---|---|---|\n'
printf '| %s (old) | %d | %d | %.2f |\n' "$(git rev-parse --short "$OLD")" "$old_s" "$old_n" "$(echo "$old_s / $old_n" | bc -l)"
printf '| %s (new) | %d | %d | %.2f |\n' "$(git rev-parse --short "$NEW")" "$new_s" "$new_n" "$(echo "$new_s / $new_n" | bc -l)"
printf 'time per trained mask, new / old: %.2f\n' "$(echo "($new_s / $new_n) / ($old_s / $old_n)" | bc -l)"
if [ "$ALSO" = "--also-members-1" ]; then
    echo "train: {members: 1}" >"$WORK/members1.yaml"
    read -r one_s one_n < <(run single "$NEW" "${NEW_CONFIG:-} $WORK/members1.yaml")
    printf '| %s, members 1 | %d | %d | %.2f |\n' "$(git rev-parse --short "$NEW")" "$one_s" "$one_n" \
        "$(echo "$one_s / $one_n" | bc -l)"
    for table in "$WORK"/new/results/embedded/tables/*.csv; do
        if cmp -s "$table" "$WORK/single/results/embedded/tables/$(basename "$table")"; then
            echo "same bytes: tables/$(basename "$table")"
        else
            echo "DIFFERENT: tables/$(basename "$table")"
        fi
    done
fi
