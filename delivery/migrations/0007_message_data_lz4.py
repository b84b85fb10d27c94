"""PostgreSQL: a queued message's bytes compressed with lz4 instead of pglz.

A message over ~2 KB is compressed as it is stored (TOAST), once per message, in the server's
backend: with pglz that was a twentieth of PostgreSQL's CPU a message in bench/smtp_outbound,
and pglz costs several times lz4's CPU to compress and to decompress (each delivery attempt
reads the bytes back) for about the same size on mail. lz4 is built into Debian's and the
official PostgreSQL packages since 14; a server without it keeps pglz. Rows stored before keep
theirs: each value records its own method.
"""

from django.db import migrations


def lz4_available(schema_editor) -> bool:
    if schema_editor.connection.vendor != "postgresql":
        return False
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
        row = cursor.fetchone()
    return row is not None and "lz4" in row[0]


def use_lz4(apps, schema_editor):
    if lz4_available(schema_editor):
        schema_editor.execute("ALTER TABLE delivery_queuedmessage ALTER COLUMN data SET COMPRESSION lz4")


def use_default(apps, schema_editor):
    if lz4_available(schema_editor):
        schema_editor.execute("ALTER TABLE delivery_queuedmessage ALTER COLUMN data SET COMPRESSION default")


class Migration(migrations.Migration):

    dependencies = [
        ("delivery", "0006_webhooks"),
    ]

    operations = [migrations.RunPython(use_lz4, use_default)]
