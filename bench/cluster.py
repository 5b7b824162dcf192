"""``python -m bench.cluster``: the cluster scenario of ``python -m bench``, alone.

The same as ``python -m bench --only cluster --postgres URL --redis URL``
(see ``bench/cluster_scenario.py``), with the two URLs taken from
``CLUBROOM_TEST_POSTGRES`` and ``CLUBROOM_TEST_REDIS`` when not given. Every
other flag of ``python -m bench`` works (``--quick``, ``--repetitions``,
``--keep``, ``--json``…).
"""

from __future__ import annotations

import os
import sys

from bench import run

SERVICES = (("--postgres", "CLUBROOM_TEST_POSTGRES"), ("--redis", "CLUBROOM_TEST_REDIS"))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    for flag, variable in SERVICES:
        if flag not in args and os.environ.get(variable):
            args += [flag, os.environ[variable]]
    return run.main(["--only", "cluster", *args])


if __name__ == "__main__":
    sys.exit(main())
