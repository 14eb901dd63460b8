"""Tidal ml layer."""
