"""runflow: declarative, transactional, resumable network-plumbing workflows."""

__version__ = "0.1.0"
