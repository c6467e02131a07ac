"""Table filters hold any key a user can send: each built filter, sent to a real Azurite, finds exactly the rows
it names, with keys made of quotes, spaces, @, parentheses and any script."""

from __future__ import annotations

import datetime as dt

import pytest
from azure.data.tables import TableServiceClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.platform import tablefilter

# What Table storage takes in a key: no / \ # ? and no control characters.
KEY_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\#?"),
                   min_size=1, max_size=40)


def test_literals_are_quoted_typed_and_never_substituted():
    assert tablefilter.literal("it's") == "'it''s'"
    assert tablefilter.literal("@k0 ") == "'@k0 '"
    assert tablefilter.literal(True) == "true"
    assert tablefilter.literal(7) == "7" and tablefilter.literal(2 ** 40) == f"{2 ** 40}L"
    assert tablefilter.literal(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)) == \
        "datetime'2026-01-02T03:04:05.000000Z'"
    assert tablefilter.all_of("a eq 1", "", tablefilter.any_of("b eq 2", "c eq 3")) == \
        "(a eq 1) and ((b eq 2) or (c eq 3))"
    assert tablefilter.all_of("a eq 1") == "a eq 1"
    with pytest.raises(ValueError):
        tablefilter.compare("RowKey or true", "eq", "x")
    with pytest.raises(ValueError):
        tablefilter.compare("RowKey", "like", "x")
    with pytest.raises(ValueError):
        tablefilter.literal(dt.datetime(2026, 1, 2))


@pytest.fixture
def table(app_env, names):
    client = TableServiceClient.from_connection_string(app_env.connection_string).create_table(names.table("filter"))
    yield client
    client.delete_table()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(KEY_TEXT, min_size=1, max_size=20, unique=True), data=st.data())
def test_a_filter_of_many_keys_finds_exactly_those_rows(table, keys, data):
    partition = "p" + str(abs(hash(tuple(keys))))
    for key in keys:
        table.upsert_entity({"PartitionKey": partition, "RowKey": key, "value": key})
    wanted = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=14, unique=True))
    text = tablefilter.all_of(tablefilter.eq("PartitionKey", partition),
                              tablefilter.any_of(*(tablefilter.eq("RowKey", key) for key in wanted)))
    found = sorted(row["RowKey"] for row in table.query_entities(text))
    assert found == sorted(wanted)
    above = data.draw(st.sampled_from(keys))
    text = tablefilter.all_of(tablefilter.eq("PartitionKey", partition), tablefilter.compare("value", "gt", above))
    # Table storage orders text by UTF-16 code units, as the big-endian encoding's bytes do.
    utf16 = lambda key: key.encode("utf-16-be")  # noqa: E731
    assert sorted(row["RowKey"] for row in table.query_entities(text)) == \
        sorted(key for key in keys if utf16(key) > utf16(above))
