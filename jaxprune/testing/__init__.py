"""Helpers for tests and experiments (tiny reference models); needs the `test` extra."""
