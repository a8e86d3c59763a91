"""Service start-up: seconds from spawning uvicorn to /ready answering 200, default bundles.

python -m bench.startup [--runs 3]
"""

from __future__ import annotations

import argparse
import json

from bench._util import machine, serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="starts to time")
    args = parser.parse_args()
    print(json.dumps({"machine": machine()}))
    times = []
    for _ in range(args.runs):
        with serve() as server:
            times.append(server.startup_s)
    print(json.dumps({"seconds_to_ready": times, "best": min(times), "worst": max(times)}))


if __name__ == "__main__":
    main()
