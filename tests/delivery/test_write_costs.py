"""What every accepted message writes: each index is a page or two more in the database's log
per row, so a table written once per message keeps only the indexes its readers use."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from delivery.models import MessageLog, QueuedMessage


def indexes_of(model) -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
    # A unique constraint is an index too (a write for every row), whichever way it was declared.
    return {name: c["columns"] for name, c in constraints.items()
            if (c["index"] or c["unique"]) and not c["primary_key"]}


def test_the_message_log_is_looked_up_by_domain_through_its_one_domain_index(db):
    by_domain = {name: columns for name, columns in indexes_of(MessageLog).items() if columns[:1] == ["domain_id"]}
    assert by_domain == {"log_domain_recent_idx": ["domain_id", "created_at"]}


def test_a_domains_log_rows_go_with_the_domain(example_org):
    MessageLog.objects.create(domain=example_org, direction="inbound", result="accepted", queue_id="GOING")
    example_org.delete()
    assert not MessageLog.objects.filter(queue_id="GOING").exists()


def test_queue_ids_have_one_index_each_with_no_like_prefix_twin(db):
    for model in (QueuedMessage, MessageLog):
        assert list(indexes_of(model).values()).count(["queue_id"]) == 1, model
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename IN (%s, %s) AND indexdef LIKE %s",
                           [QueuedMessage._meta.db_table, MessageLog._meta.db_table, "%pattern_ops%"])
            assert cursor.fetchall() == []


def test_a_queue_id_is_still_unique(db):
    QueuedMessage.objects.create(queue_id="0123456789ABCDEF", sender="bob@example.org", data=b"x")
    with pytest.raises(IntegrityError), transaction.atomic():
        QueuedMessage.objects.create(queue_id="0123456789ABCDEF", sender="eve@example.org", data=b"y")
