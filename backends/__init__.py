"""runflow's built-in backend plugins, one module each, registered through the same hooks as
third-party plugins (see runflow.core.hookspecs)."""
