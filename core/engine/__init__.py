"""The training engine: `launch` starts runs (no torch), `process` is the run process itself
(`python -m ftwiz.core.engine RUN_DIR`), `probe`, `checkpoints`, `results`, `speed` serve it."""
