"""The `bridgelab` command line: the parser (parser.py), the commands (commands.py) and the
entry point that maps typed errors to the exit codes of errors.py (main.py)."""

from .main import main

__all__ = ["main"]
