"""Reusable widgets of the wizard (each owns its DEFAULT_CSS; layout lives in tui/*.tcss)."""
