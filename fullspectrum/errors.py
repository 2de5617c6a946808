"""Failures every step reports the same way (kept apart from the heavy modules so any script can import them)."""

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; Snakemake's retries (or SLURM's requeue) resume the run


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the run stops and writes no metrics."""


class Preempted(Exception):
    """SIGTERM/SIGUSR1 arrived; the state was checkpointed and the run should exit to be resumed."""
