"""Recover from the lock a killed Snakemake run leaves behind, deciding by the running processes, not by guessing.

Snakemake locks the outputs of a run in `.snakemake/locks` and removes the folder when the run ends; after a
SIGKILL (or an OOM kill, a lost node) the folder stays and every later run stops with "Directory cannot be
locked" until someone types `--unlock`. The Snakefile calls `clear_stale_lock` while it is parsed, before
Snakemake takes its lock: when no other Snakemake process works in the folder, the lock can only be stale and is
removed; otherwise the processes that may hold it are named.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PROC = Path("/proc")


def _argv(pid: int) -> list[str]:
    return (PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]


def is_snakemake(argv: list[str]) -> bool:
    """Whether a command line runs Snakemake (`snakemake ...`, `python -m snakemake ...`, `python .../snakemake`)."""
    names = [os.path.basename(arg) for arg in argv[:3]]
    if names and names[0] == "snakemake":
        return True
    return bool(names) and names[0].startswith("python") and (
        names[1:2] == ["snakemake"] or argv[1:3] == ["-m", "snakemake"])


def _parent(pid: int) -> int:
    stat = (PROC / str(pid) / "stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # the command name may contain spaces and parentheses


def ancestors(pid: int) -> set[int]:
    """`pid` and every process above it: the Snakemake that parses this Snakefile is one of them."""
    chain = set()
    while pid > 0 and pid not in chain:
        chain.add(pid)
        try:
            pid = _parent(pid)
        except (OSError, IndexError, ValueError):
            break
    return chain


def snakemake_processes(folder: str | os.PathLike) -> list[tuple[int, str]]:
    """(pid, command line) of the other Snakemake processes whose working directory is `folder`."""
    folder, mine = os.path.realpath(folder), ancestors(os.getpid())
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            argv = _argv(int(entry.name))
            if is_snakemake(argv) and os.path.realpath(os.readlink(entry / "cwd")) == folder:
                found.append((int(entry.name), " ".join(argv)))
        except OSError:  # ended meanwhile, or another user's process: not one working here
            continue
    return sorted(found)


def clear_stale_lock(folder: str | os.PathLike) -> str | None:
    """Remove `folder`'s Snakemake lock if no Snakemake process works there; say what happened (None: no lock)."""
    locks = Path(folder) / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.iterdir()):
        return None
    holders = snakemake_processes(folder)
    if holders:
        named = "; ".join(f"pid {pid}: {command}" for pid, command in holders)
        return (f"{locks} is held by a Snakemake process working in {os.path.realpath(folder)} ({named}); "
                "wait for it to finish, or stop it, then run again")
    shutil.rmtree(locks, ignore_errors=True)
    return (f"removed the stale lock {locks}: a killed run left it and no Snakemake process works in "
            f"{os.path.realpath(folder)}")
