"""An example runflow plugin package (see plugin.py)."""
