"""Ready-made applications built on Tidal's public layers: today the IoT demo (``tidal demo``).

An application sits above the pipeline builder (DESIGN.md's layers: cli -> apps ->
pipeline -> runtime -> io/ml/observe -> core -> errors): it may use everything below it,
and nothing below imports it.
"""
