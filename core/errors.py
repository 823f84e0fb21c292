"""The one exception type for a user's mistake (see docs/DESIGN.md, "Errors")."""


class UserError(ValueError):
    """A mistake in the user's input: the CLI prints one line and exits 2."""


class JobFailed(RuntimeError):
    """A job that failed for a reason outside the user's input (a lost worker): the CLI
    prints one line and exits 1; what the job finished is kept for the rerun."""
