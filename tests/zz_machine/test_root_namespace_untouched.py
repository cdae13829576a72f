"""Runs last (directory order): the machine's own namespace is as it was before the suite."""

import os

import pytest

from tests.conftest import root_snapshot

pytestmark = pytest.mark.kernel


def test_machine_namespace_identical_before_and_after_the_suite(request):
    before = getattr(request.config, "_root_before", None)
    assert before is not None, "the session start hook took no snapshot (not root?)"
    after = root_snapshot()
    for key in before:
        assert after[key] == before[key], f"the machine's own namespace changed: {key}"
    leftovers = [n for n in os.listdir("/run/netns") if n.startswith(("bl-t", "blt"))] if os.path.isdir("/run/netns") else []
    assert not leftovers, f"tests left namespaces behind: {leftovers}"
