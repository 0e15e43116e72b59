"""The `vidprep` subcommands' bodies, grouped by what they work on (pipeline/cli.py dispatches)."""
