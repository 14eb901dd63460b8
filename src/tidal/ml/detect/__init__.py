"""Anomaly detectors (placeholder, filled below)."""
