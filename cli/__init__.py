"""The `ftwiz` command: the wizard with no arguments, headless subcommands for scripts."""
