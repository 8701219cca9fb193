"""The wait after a new role assignment (infra/registry.py): only what is left of it, once per assignment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from infra.registry import RbacPropagationProvider, propagation_wait

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def test_a_new_assignment_waits_the_rest_of_the_propagation_time():
    assert propagation_wait((NOW - timedelta(seconds=60)).isoformat(), 300, NOW) == 240
    assert propagation_wait("2026-12-01T00:00:00.000000Z", 300, NOW) == 0, "an earlier up's assignment has propagated"
    assert propagation_wait(None, 300, NOW) == 300


def test_only_another_assignment_waits_again():
    provider = RbacPropagationProvider()
    same = provider.diff("id", {"assignment_id": "a", "seconds": 300}, {"assignment_id": "a", "seconds": 300})
    other = provider.diff("id", {"assignment_id": "a"}, {"assignment_id": "b"})
    assert not same.changes and other.changes and other.replaces == ["assignment_id"]
