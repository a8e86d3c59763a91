"""The one exception a run raises when it cannot start or continue (exit status 1)."""


class TrainingError(Exception):
    """A run that cannot start or continue; the message says why."""
