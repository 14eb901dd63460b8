"""Core: batches, time and watermarks, windows, keyed state and operators.

Knows nothing of Kafka, files or models.
"""
