"""How a ``groundroll`` subcommand is added to the parser."""

from __future__ import annotations

import argparse
import inspect
from typing import Callable

__all__ = ["add_command", "CommandError", "load_or_fail", "EXIT_OK", "EXIT_ERROR",
           "EXIT_USAGE"]

EXIT_OK = 0
EXIT_ERROR = 1
#: Bad arguments or inputs, or outputs that exist without ``--force``.
EXIT_USAGE = 2

#: What loading a model by name raises for a name, path or file that does not serve.
LOAD_ERRORS = (ValueError, RuntimeError, TypeError, OSError, ImportError)


class CommandError(Exception):
    """An error a subcommand reports on stderr, with its exit status."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def load_or_fail(load: Callable, name: str):
    """``load(name)``, or a :class:`CommandError` (exit status ``EXIT_ERROR``) that names
    the model and says why it could not be loaded."""
    try:
        return load(name)
    except LOAD_ERRORS as err:
        raise CommandError(f"cannot load model {name!r}: {err}", EXIT_ERROR) from None


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
