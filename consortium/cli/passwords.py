"""Where a keystore password comes from: the environment, else the terminal.

Passwords are never command-line arguments, which other users see in ``ps`` and which shells
keep in their history.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

import click

from consortium.errors import KeystoreError

PASSWORD_ENV = "CONSORTIUM_PASSWORD"

# (prompt text, ask twice) -> password; the default asks on the terminal without echo.
Prompt = Callable[[str, bool], str]


def resolve_password(env: Mapping[str, str], *, confirm: bool, prompt: Prompt | None = None) -> str:
    """Return the password from ``CONSORTIUM_PASSWORD``, or else ask for it.

    ``confirm`` is for a password that is being set (a new or imported key): it is asked twice
    and must not be empty. Without ``prompt``, asking needs a terminal on stdin; scripts and CI
    must set the environment variable instead of hanging on a prompt nobody sees.
    """
    password = env.get(PASSWORD_ENV)
    if not password:
        if prompt is None:
            if not sys.stdin.isatty():
                raise KeystoreError(f"no password: set {PASSWORD_ENV} or run interactively")
            prompt = _terminal_prompt
        password = prompt("New password" if confirm else "Password", confirm)
    if confirm and not password:
        raise KeystoreError("the password must not be empty")
    return password


def _terminal_prompt(text: str, confirm: bool) -> str:
    password: str = click.prompt(text, hide_input=True, confirmation_prompt=confirm)
    return password
