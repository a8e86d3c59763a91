"""A torchrun worker for the failure test: `python -m training ...` whose rank
$RNNLM_TEST_FAILING_RANK raises in its first epoch, while the other ranks wait for it in
the gradient all-reduce."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from training import cli, loop


def broken_epoch(*_args: object, **_kwargs: object) -> NoReturn:
    raise OSError(f"rank {os.environ['RANK']} cannot read its minibatches")


if __name__ == "__main__":
    if os.environ["RANK"] == os.environ["RNNLM_TEST_FAILING_RANK"]:
        loop.train_epoch = broken_epoch  # type: ignore[assignment]
    sys.exit(cli.main(sys.argv[1:]))
