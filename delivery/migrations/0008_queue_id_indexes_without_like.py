"""Queue ids keep one index each, without PostgreSQL's LIKE-prefix twin.

On PostgreSQL Django gives a CharField with unique=True or db_index=True a second index,
`varchar_pattern_ops`, for LIKE 'prefix%'. Nothing looks queue ids up by prefix, and a queued
message and each of its log rows paid an index insertion for it. The unique rule becomes a
constraint and the log's index a Meta index: same lookups, one index each. SQLite never had the
twin; there this only renames what it had.
"""

import delivery.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('delivery', '0007_message_data_lz4'),
        ('domains', '0004_send_limits'),
    ]

    operations = [
        migrations.AlterField(
            model_name='messagelog',
            name='queue_id',
            field=models.CharField(blank=True, max_length=32),
        ),
        migrations.AlterField(
            model_name='queuedmessage',
            name='queue_id',
            field=models.CharField(default=delivery.models.new_queue_id, max_length=32),
        ),
        migrations.AddIndex(
            model_name='messagelog',
            index=models.Index(fields=['queue_id'], name='log_queue_id_idx'),
        ),
        migrations.AddConstraint(
            model_name='queuedmessage',
            constraint=models.UniqueConstraint(fields=('queue_id',), name='queue_id_unique'),
        ),
    ]
