"""Entry point. Subcommands live in their own modules and are imported only when called,
so `ftwiz gpus` never pays for importing torch or Textual."""

from __future__ import annotations

import importlib
import sys

import click

from ftwiz.core.errors import UserError

# name -> "module:attribute" of a click.Command, imported on first use.
COMMANDS: dict[str, str] = {
    "gpus": "ftwiz.cli.hardware_cmds:gpus",
    "cost": "ftwiz.cli.hardware_cmds:cost",
    "decide": "ftwiz.cli.hardware_cmds:decide",
    "params": "ftwiz.cli.model_cmds:params",
    "explore": "ftwiz.cli.model_cmds:explore",
    "plan": "ftwiz.cli.plan_cmds:plan",
    "data": "ftwiz.cli.data_cmds:data",
    "train": "ftwiz.cli.run_cmds:train",
    "runs": "ftwiz.cli.run_cmds:runs",
    "attach": "ftwiz.cli.run_cmds:attach",
    "stop": "ftwiz.cli.run_cmds:stop",
    "resume": "ftwiz.cli.run_cmds:resume",
    "rm": "ftwiz.cli.run_cmds:rm",
    "merge": "ftwiz.cli.run_cmds:merge",
    "sample": "ftwiz.cli.run_cmds:sample",
    "export": "ftwiz.cli.after_cmds:export",
    "chat": "ftwiz.cli.after_cmds:chat",
    "push": "ftwiz.cli.after_cmds:push",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, invoke_without_command=True)
@click.option("--runs-dir", default="runs", show_default=True, help="Where runs live.")
@click.version_option(package_name="ftwiz")
@click.pass_context
def cli(ctx: click.Context, runs_dir: str) -> None:
    """ftwiz: fine-tune a language model on this GPU, guided. With no command, starts the wizard."""
    from ftwiz.core.runs import check_runs_dir

    check_runs_dir(runs_dir)
    ctx.ensure_object(dict)
    ctx.obj["runs_dir"] = runs_dir
    if ctx.invoked_subcommand is None:
        from ftwiz.tui.app import run_wizard

        run_wizard(runs_dir=runs_dir)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a UserError is one line on stderr and exit code 2, never a traceback."""
    try:
        result = cli.main(args=argv, prog_name="ftwiz", standalone_mode=False)
    except UserError as exc:
        click.echo(f"ftwiz: {exc}", err=True)
        return UserError.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 2
    except click.exceptions.Abort:
        click.echo("ftwiz: aborted", err=True)
        return 130
    except KeyboardInterrupt:
        return 130
    # Without standalone mode click hands back ctx.exit()'s code instead of exiting.
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
