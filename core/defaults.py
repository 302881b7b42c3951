"""Defaults that both the run config (pydantic) and the planner read, in a module light enough
for `ftwiz plan`, which must not pay for importing pydantic."""

EVAL_FRACTION = 0.1
"""Share of the rows held out for evaluation (data.eval_fraction's default)."""
EVALUATIONS_PER_RUN = 10
"""Evaluations (and checkpoints) in a run whose eval_steps and save_steps are not set."""
