"""Tidal runtime layer."""
