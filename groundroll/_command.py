"""How a ``groundroll`` subcommand is added to the parser."""

from __future__ import annotations

import argparse
import inspect
from typing import Callable

__all__ = ["add_command"]


def add_command(subparsers, name: str, run: Callable[[argparse.Namespace], int], *,
                help: str) -> argparse.ArgumentParser:
    """Add the subcommand ``name``, which calls ``run(args)`` for its exit status.

    ``help`` is the line in the parent's command list; the subcommand's own ``--help``
    describes it with ``run``'s docstring, so the text a user reads and the code it
    describes stay together.

    Parameters
    ----------
    subparsers
        What ``parser.add_subparsers()`` returned.
    name : str
    run : callable
        ``run(args) -> int``; set as ``args.func``.
    help : str

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser, for its options.

    Examples
    --------
    >>> def hello(args):
    ...     '''Say hello.'''
    ...     return 0
    >>> parser = argparse.ArgumentParser(prog="demo")
    >>> p = add_command(parser.add_subparsers(), "hello", hello, help="greet")
    >>> p.description, parser.parse_args(["hello"]).func is hello
    ('Say hello.', True)
    """
    p = subparsers.add_parser(name, help=help, description=inspect.getdoc(run))
    p.set_defaults(func=run)
    return p
