"""Tidal observe layer."""
