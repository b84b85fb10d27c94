"""Trigram indexes for the message log's text search on PostgreSQL.

The log pages search `mail_from`, `recipients` and `subject` with icontains, which Django turns
into `UPPER(col::text) LIKE UPPER('%…%')`: without these indexes that is a full scan of a
million-row table (1.5 s). pg_trgm is a trusted extension (PostgreSQL 13+), so the database owner
may create it; if it cannot be created the search still works, only slower. SQLite has no such
index: the embedded default scans.
"""

from django.db import migrations, transaction

COLUMNS = ("mail_from", "recipients", "subject")


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except Exception:  # noqa: BLE001 - no extension: keep the slower scan
        return
    for column in COLUMNS:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS log_{column}_trgm_idx ON delivery_messagelog "
            f"USING gin (UPPER({column}::text) gin_trgm_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in COLUMNS:
        schema_editor.execute(f"DROP INDEX IF EXISTS log_{column}_trgm_idx")


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0001_audit_log_and_login_failures"),
        ("delivery", "0002_initial"),
    ]

    operations = [migrations.RunPython(create, drop)]
