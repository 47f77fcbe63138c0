"""Helpers for user interfaces: drawing results, export files, tracking faces across frames."""
