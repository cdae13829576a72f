"""The `bridgelab` entry point: parse, load the topology, run the command, and map every typed
error to its exit code (errors.py) in one line, never a traceback."""

from __future__ import annotations

import json
import os
import sys

from .. import logs
from ..errors import EXIT_FAIL, EXIT_INPUT, BridgelabError, ConflictError
from ..lab import spec as specmod
from . import commands
from .parser import parser

NO_SPEC = ()  # commands that need no topology file


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(os.environ.get("BRIDGELAB_LOG_LEVEL", "info" if args.cmd == "run" else "warning"))
    try:
        spec = specmod.load(args.file)
    except specmod.SpecError as e:
        if getattr(args, "json", False):
            print(json.dumps({"error": "invalid-topology", **e.as_json()}, indent=1))
        else:
            print(e.render(), file=sys.stderr)
        return EXIT_INPUT
    if os.geteuid() != 0 and args.cmd not in ("validate", "graph"):
        print("bridgelab: needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for namespaces)", file=sys.stderr)
        return EXIT_FAIL
    try:
        return commands.COMMANDS[args.cmd](args, spec)
    except ConflictError as e:
        print(f"bridgelab: conflict: {e}; nothing was applied", file=sys.stderr)
        return e.exit_code
    except BridgelabError as e:
        print(f"bridgelab: {e}; nothing was changed", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
