"""Runs last (directory order): the machine's own namespace is as it was before the suite."""

import pytest

from tests.conftest import root_snapshot, suite_namespaces

pytestmark = pytest.mark.kernel


def test_machine_namespace_identical_before_and_after_the_suite(request):
    before = getattr(request.config, "_root_before", None)
    assert before is not None, "the session start hook took no snapshot (not root?)"
    after = root_snapshot()
    for key in before:
        assert after[key] == before[key], f"the machine's own namespace changed: {key}"
    leftovers = sorted(suite_namespaces() - request.config._stale_test_ns)
    assert not leftovers, f"tests left namespaces behind: {leftovers}"
