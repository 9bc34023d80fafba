"""The help formatter of every ``scratchrnn`` subcommand: argparse's, which appends each flag's
default, but not where that says nothing: a required flag, a switch (its default is off), a
default of None or "" (the help line says what leaving the flag out means) or a help line that
states its default itself."""

from __future__ import annotations

import argparse

__all__ = ["DefaultsHelpFormatter"]


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after a flag's help, unless required, a switch, None or "", or already said."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        says_nothing = action.default is None or action.default == "" or action.nargs == 0
        if action.required or says_nothing or "default" in help:
            return help
        return super()._get_help_string(action)
