"""Sysctls read and written inside a namespace (the /proc/sys/net view follows the thread's)."""

from __future__ import annotations

import os

from . import netns


def _path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def read(ns: str | None, key: str) -> str | None:
    with netns.entered(ns):
        try:
            fd = os.open(_path(key), os.O_RDONLY)
        except FileNotFoundError:
            return None
    try:
        return os.read(fd, 256).decode().strip()
    finally:
        os.close(fd)


def write(ns: str | None, key: str, value: str) -> None:
    with netns.entered(ns):
        fd = os.open(_path(key), os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
