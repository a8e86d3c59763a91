"""What a run raises when it cannot start or continue (exit status 1; too little data: 2)."""


class TrainingError(Exception):
    """A run that cannot start or continue; the message says why."""


class TooLittleData(TrainingError):
    """The corpus holds no minibatch (exit status 2, like a bad flag: the sizes say why)."""
