"""vidprep orchestration: config, runner, commit/resume, catalog, report, CLI."""
__version__ = "0.1.0"
