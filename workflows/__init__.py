"""Ready workflows (TOML), shipped with runflow as package data."""
