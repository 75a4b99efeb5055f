"""The benchmarks: one script per question (``python benchmarks/X.py --help``, or ``python -m benchmarks.X``), each
printing a table and writing ``--json FILE``; the shared parts are modules of this package: ``servers`` (a
``hamdex serve`` subprocess), ``data`` (seeded synthetic codes and exact references), ``load`` (the HTTP load
generator) and ``report`` (JSON output). The fault-injection harness the crash test uses lives in ``tests/crash/``.

Not installed with hamdex: import it from the repository's root.
"""
