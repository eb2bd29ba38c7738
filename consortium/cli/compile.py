"""``consortium compile``: rebuild the committed contract artifacts from the sources."""

from __future__ import annotations

import click

from consortium.chain.artifacts import ARTIFACTS_DIR
from consortium.chain.compile import (
    compile_contracts,
    find_compiler,
    stale_artifacts,
    standard_input,
    write_artifacts,
)
from consortium.errors import ConsortiumError


class StaleArtifacts(ConsortiumError):
    """``--check`` found artifacts that no longer match their sources."""


@click.command("compile")
@click.option("--check", is_flag=True, help="Only report stale artifacts; exit 1 if any.")
def compile_command(check: bool) -> None:
    """Compile contracts/*.sol into consortium/chain/contracts/ (native solc, else npm solc)."""
    standard_input()  # an installed package has no sources: the reason to give there, first
    compiler = find_compiler()
    click.echo(f"compiling with {compiler.describe()}", err=True)
    fresh = compile_contracts(compiler)
    stale = stale_artifacts(fresh)
    if check:
        if stale:
            raise StaleArtifacts(f"stale artifacts: {', '.join(stale)}; run `consortium compile`")
        click.echo("artifacts are up to date")
        return
    write_artifacts(fresh)
    changed = ", ".join(stale) if stale else "none changed"
    click.echo(f"wrote {len(fresh)} artifacts to {ARTIFACTS_DIR} ({changed})")
