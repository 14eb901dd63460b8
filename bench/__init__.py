"""Tidal's benchmarks: scripts that print tables (never timed assertions in tests).

Run them with ``python bench/run.py`` (all) or ``python bench/run.py w1`` (one); ``make bench``
does the same with the project's virtual environment.
"""
