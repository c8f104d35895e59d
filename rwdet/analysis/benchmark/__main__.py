"""``python -m rwdet.analysis.benchmark --worker JSON``: one side's worker process (started by
:class:`rwdet.analysis.benchmark.worker.WorkerClient`; run ``tools/benchmark.py`` instead)."""

import sys

from .worker import worker_main

if len(sys.argv) == 3 and sys.argv[1] == "--worker":
    sys.exit(worker_main(sys.argv[2]))
sys.exit(f"usage: python -m rwdet.analysis.benchmark --worker JSON (run tools/benchmark.py instead), "
         f"got {sys.argv[1:]}")
