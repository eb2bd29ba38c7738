"""The ``consortium`` command: the root group and the process entry point.

Errors the project raises on purpose (:class:`~consortium.errors.ConsortiumError`) end the
process with a one-line ``error: ...`` on stderr and their own exit code, never a traceback.
The handling lives in the root group's ``main`` so that the console script and tests driving
``cli`` through ``click.testing.CliRunner`` take the same path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from consortium.cli.account import account
from consortium.cli.audit import audit
from consortium.cli.chain import chain
from consortium.cli.compile import compile_command
from consortium.cli.consent import consent
from consortium.cli.context import CliContext
from consortium.cli.dataset import dataset
from consortium.cli.deploy import deploy_command
from consortium.cli.disclose import disclose_command
from consortium.cli.export import export
from consortium.cli.job import job
from consortium.cli.journal import journal
from consortium.cli.member import member
from consortium.cli.predict import predict
from consortium.cli.simulate import simulate
from consortium.cli.withdraw import withdraw_command
from consortium.errors import ConsortiumError

EXIT_USAGE = 2
EXIT_ABORTED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class _RootGroup(click.Group):
    def main(self, *args: Any, **kwargs: Any) -> NoReturn:
        kwargs["standalone_mode"] = False
        sys.exit(_exit_code(lambda: super(_RootGroup, self).main(*args, **kwargs)))


def _exit_code(run: Callable[[], object]) -> int:
    """Run the command line and turn its outcome into a process exit code."""
    try:
        result = run()
    except ConsortiumError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        # Every click error is about how the command was invoked: a usage error, told in one
        # line like every other error, with where to look for the right invocation.
        context = getattr(exc, "ctx", None)
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        return EXIT_USAGE
    except click.Abort as exc:
        # click turns Ctrl-C into Abort; the interrupt is kept as its cause.
        if isinstance(exc.__cause__, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        click.echo("aborted", err=True)
        return EXIT_ABORTED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    # Without standalone mode, click returns the code of ctx.exit(code) (0 for --help).
    return result if isinstance(result, int) else 0


@click.group(cls=_RootGroup)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Configuration file [default: $CONSORTIUM_CONFIG or ./hardhat-free-config.toml].",
)
@click.version_option(package_name="consortium", prog_name="consortium")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Auditable federated learning anchored on an EVM ledger."""
    ctx.obj = CliContext(config_path)


for command in (
    chain,
    account,
    audit,
    compile_command,
    deploy_command,
    disclose_command,
    export,
    member,
    dataset,
    consent,
    job,
    journal,
    predict,
    simulate,
    withdraw_command,
):
    cli.add_command(command)


def main() -> NoReturn:
    """Console-script entry point (``consortium``)."""
    cli.main(prog_name="consortium")
