"""What every ``lvu`` subcommand shares: help formatting with an example, ``--debug``, recipe arguments.

This module and the command modules beside it import no heavy library at module level (torch, Lightning,
transformers): building the parser for ``lvu --help`` must stay instant. Each command imports what it runs.
"""

from __future__ import annotations

import argparse


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=110)


def add_command(subparsers: argparse._SubParsersAction, name: str, help: str, example: str,
                description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose help ends with an example."""
    parser = subparsers.add_parser(
        name, help=help, description=description or help, epilog=f"example:\n  {example}", formatter_class=Formatter
    )
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    return parser


def add_recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML file, or a built-in recipe name (see `lvu recipes`)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="overrides, e.g. trainer.max_steps=10 data.batch_size=4; trainer=ddp picks a preset")
