"""Helpers shared by the test suites (namespace snapshots, ...)."""
