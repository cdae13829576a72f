"""structlog, configured once: JSON lines when stderr is not a TTY (services, CI), readable
console output on a TTY. stdlib logging (pyroute2, asyncio) goes through the same processors.

Imported lazily: structlog (with the rich and asyncio modules it pulls in) is ~100 ms of a CLI
command's ~300 ms on this machine (python -X importtime), and most commands never log. So
configure() only records the level; structlog is set up on the first log line, ours or a
stdlib record (the daemon sets it up at once: eager=True)."""

from __future__ import annotations

import logging
import sys

_configured = False
_wanted: tuple[str, bool | None] = ("info", None)


class _FirstRecord(logging.Handler):
    """The root handler until structlog is set up: the first stdlib record sets it up, then
    goes through it."""

    def emit(self, record: logging.LogRecord) -> None:
        _setup()
        for h in logging.getLogger().handlers:
            if h is not self and record.levelno >= h.level:
                h.handle(record)


def configure(level: str = "info", json: bool | None = None, eager: bool = False) -> None:
    global _wanted
    if _configured:
        return
    _wanted = (level, json)
    root = logging.getLogger()
    root.handlers[:] = [_FirstRecord()]
    root.setLevel(level.upper())
    if eager:
        _setup()


def _setup() -> None:
    global _configured
    if _configured:
        return
    _configured = True
    import structlog
    level, json = _wanted
    if json is None:
        json = not sys.stderr.isatty()
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        cache_logger_on_first_use=True,
    )


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
           "error": logging.ERROR, "exception": logging.ERROR, "critical": logging.CRITICAL}


def _nothing(*_a, **_k) -> None:
    return None


class _Lazy:
    """A structlog logger made on first use."""

    def __init__(self, name: str):
        self._name, self._log = name, None

    def __getattr__(self, attr: str):
        if self._log is None and attr in _LEVELS and _LEVELS[attr] < logging.getLevelName(_wanted[0].upper()):
            return _nothing   # filtered out anyway: no reason to load structlog for it
        if self._log is None:
            _setup()
            import structlog
            self._log = structlog.get_logger(self._name)
        return getattr(self._log, attr)


def get(name: str = "bridgelab"):
    return _Lazy(name)
