"""How a job's raw blobs are cut into parts (one result file each)."""

from __future__ import annotations

import pytest
from helpers import offline_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.export.planning import split_evenly

# Runs without Azurite or a host: `make test-pure`.
pytestmark = pytest.mark.pure


def blobs(*sizes):
    return [(f"b{i}", size) for i, size in enumerate(sizes)]


def sizes_of(groups):
    return [sum(size for _, size in group) for group in groups]


@pytest.fixture
def small_parts():
    with offline_settings(EXPORT_PART_MAX_BYTES=64):
        yield


def test_parts_are_as_few_as_the_cap_allows_and_about_equal(small_parts):
    # filling each part to the cap would give 60 + 40; two parts of 50 end together
    assert sizes_of(split_evenly(blobs(*[10] * 10))) == [50, 50]
    assert sizes_of(split_evenly(blobs(30, 30, 30))) == [60, 30]
    assert sizes_of(split_evenly(blobs(100, 5, 5))) == [100, 10]  # a blob over the cap is a part of its own


def test_empty_blobs_do_not_make_parts_of_their_own(small_parts):
    assert [len(g) for g in split_evenly(blobs(0, 0, 0))] == [3]
    assert [len(g) for g in split_evenly(blobs(40, 40, 0, 0))] == [1, 3]
    assert split_evenly([]) == [[]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 200), max_size=40))
def test_every_blob_once_in_order_and_no_part_over_the_cap_unless_one_blob_is(sizes):
    with offline_settings(EXPORT_PART_MAX_BYTES=64):
        groups = split_evenly(blobs(*sizes))
    assert [blob for group in groups for blob in group] == blobs(*sizes)
    for group in groups:
        assert sum(size for _, size in group) <= 64 or len(group) == 1 or group[0][1] > 64
    # Each group but the last, with the first blob of the next, holds at least the target size total / k
    # (k = ceil(total / cap)): so (groups - 1) * total / k <= 2 * total. Sizes [1, 64, 1, 64, 1] need 5.
    assert len(groups) <= 2 * max(1, -(-sum(sizes) // 64)) + 1
