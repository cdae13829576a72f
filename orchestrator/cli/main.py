"""The `bridgelab` entry point: parse, load the topology, run the command, and map every typed
error to its exit code (errors.py) in one line, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import sys

from .. import logs
from ..errors import EXIT_FAIL, EXIT_INPUT, EXIT_INTERRUPTED, BridgelabError, ConflictError
from ..lab import spec as specmod
from . import commands
from .parser import parser

NEEDS_NO_ROOT = ("validate", "graph")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    if "_ARGCOMPLETE" in os.environ:   # a completion request: ~10 ms of import on every start otherwise
        try:
            import argcomplete  # shell completion: eval "$(register-python-argcomplete bridgelab)"
            argcomplete.autocomplete(p)
        except ImportError:
            pass
    args = p.parse_args(argv)
    if args.cmd != "run":
        # `bridgelab status | head -1`: a closed pipe ends us quietly, as it ends cat or grep
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    logs.configure(os.environ.get("BRIDGELAB_LOG_LEVEL", "info" if args.cmd == "run" else "warning"),
                   eager=args.cmd == "run")
    try:
        spec = specmod.load(args.file)
    except specmod.SpecError as e:
        if getattr(args, "json", False):
            print(json.dumps({"error": "invalid-topology", **e.as_json()}, indent=1))
        else:
            print(e.render(), file=sys.stderr)
        return EXIT_INPUT
    if os.geteuid() != 0 and args.cmd not in NEEDS_NO_ROOT:
        print("bridgelab: needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for namespaces)", file=sys.stderr)
        return EXIT_FAIL
    try:
        if spec.hosts or getattr(args, "as_", None):
            from . import multihost
            return multihost.dispatch(args, spec, commands.COMMANDS)
        return commands.COMMANDS[args.cmd](args, spec)
    except ConflictError as e:
        print(f"bridgelab: conflict: {e}; nothing was applied", file=sys.stderr)
        return e.exit_code
    except BridgelabError as e:
        print(f"bridgelab {args.cmd}: {e}; nothing was changed", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"bridgelab {args.cmd}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug: one line for the user, the traceback on request
        if os.environ.get("BRIDGELAB_DEBUG"):
            raise
        print(f"bridgelab {args.cmd}: internal error: {type(e).__name__}: {e} "
              "(BRIDGELAB_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
