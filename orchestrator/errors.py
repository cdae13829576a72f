"""Exit codes and the typed errors that map to them: defined once, for the CLI and every caller.

Exit codes (stable; scripts and later tools rely on them):
  0  success (for `up`: the lab is as the topology says, changed or not)
  1  a kernel operation failed; what was applied is reported
  2  bad input: topology file, arguments or environment; nothing was applied
  3  conflict: a resource the lab needs exists and belongs to someone else; nothing was applied
  4  the lab is not up (status, exec, trace, logs; drops when no daemon ever ran for the lab)
  5  busy: the lab is managed by a running daemon (or another up/down, or lives in another
     network namespace); nothing was done
  130 interrupted (Ctrl-C); what was applied is reported
`explain` and `check` have their own: 0 works/all hold, 1 broken/one fails, 2 bad input.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_CONFLICT, EXIT_NOT_UP, EXIT_BUSY = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130


class BridgelabError(Exception):
    """An error the CLI reports in one line (no traceback) with its exit code."""

    exit_code = EXIT_FAIL


class InputError(BridgelabError, ValueError):
    """Bad input from the command line or the environment; nothing was applied."""

    exit_code = EXIT_INPUT


class UnsafeName(InputError):
    """A name that is not one (a lab name with '/' or '..'): never used in a path or a name."""


class ConflictError(BridgelabError, RuntimeError):
    """A resource we would create exists and is not ours: we never take over a stranger's."""

    exit_code = EXIT_CONFLICT


class NotUpError(BridgelabError):
    exit_code = EXIT_NOT_UP


class BusyError(BridgelabError):
    """Someone else manages the lab right now: its daemon, another up/down, another namespace."""

    exit_code = EXIT_BUSY
