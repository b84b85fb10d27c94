"""What every accepted message writes: each index is a page or two more in the database's log
per row, so a table written once per message keeps only the indexes its readers use."""

from __future__ import annotations

from django.db import connection

from delivery.models import MessageLog


def indexes_of(model) -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
    return {name: c["columns"] for name, c in constraints.items() if c["index"] and not c["primary_key"]}


def test_the_message_log_is_looked_up_by_domain_through_its_one_domain_index(db):
    by_domain = {name: columns for name, columns in indexes_of(MessageLog).items() if columns[:1] == ["domain_id"]}
    assert by_domain == {"log_domain_recent_idx": ["domain_id", "created_at"]}


def test_a_domains_log_rows_go_with_the_domain(example_org):
    MessageLog.objects.create(domain=example_org, direction="inbound", result="accepted", queue_id="GOING")
    example_org.delete()
    assert not MessageLog.objects.filter(queue_id="GOING").exists()
