"""monitoring/logformat.py reads a request-log line's `ids` whatever wrote it: a list per id column, one null for an id
no record had, no `ids` at all (a contract without ids, or a line from before ids were logged)."""

from __future__ import annotations

from monitoring import logformat


def test_a_lines_ids_are_one_value_per_record_by_id_column():
    assert logformat.ids({"order": ["a", None, 7], "account": None}, 3) == {"order": ["a", None, 7],
                                                                           "account": [None, None, None]}


def test_a_line_without_ids_reads_as_nulls_for_the_ids_asked_for():
    assert logformat.ids(None, 2, ["order"]) == {"order": [None, None]}
    assert logformat.ids({}, 2, ["order"]) == {"order": [None, None]}
    assert logformat.ids(None, 2) == {}


def test_malformed_ids_are_none():
    for wrong in (["a"], {"order": ["a"]}, {"order": "a"}, {"order": ["a", "b", "c"]}, "ids"):
        assert logformat.ids(wrong, 2) is None, wrong
