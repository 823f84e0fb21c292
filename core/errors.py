"""The one exception type for a user's mistake (see docs/DESIGN.md, "Errors")."""


class UserError(ValueError):
    """A mistake in the user's input: the CLI prints one line and exits 2."""
