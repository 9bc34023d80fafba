"""The help formatter of every ``scratchrnn`` subcommand: argparse's, which appends each flag's
default, but not where that says nothing: a required flag, a default of None (the help line says
what leaving the flag out means) or a help line that states its default itself."""

from __future__ import annotations

import argparse

__all__ = ["DefaultsHelpFormatter"]


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after a flag's help, unless required, None, or already said."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        if action.required or action.default is None or "default" in help:
            return help
        return super()._get_help_string(action)
