"""data_changes ids become time-ordered (version 7) UUIDs: see TimeOrderedUUID."""

from django.db import migrations, models

import changes.models

UUID_TIME_ORDERED = """
CREATE OR REPLACE FUNCTION uuid_time_ordered() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    -- A random (version 4) UUID whose first 6 bytes are replaced by the Unix time in
    -- milliseconds, and whose version nibble is turned from 0100 into 0111 (version 7).
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp())
                                                     * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$
"""


class Migration(migrations.Migration):
    dependencies = [("changes", "0002_partial_log_indexes")]

    operations = [
        migrations.RunSQL(UUID_TIME_ORDERED, "DROP FUNCTION IF EXISTS uuid_time_ordered()"),
        migrations.AlterField(
            model_name="datachange",
            name="id",
            field=models.UUIDField(
                db_default=changes.models.TimeOrderedUUID(),
                editable=False,
                primary_key=True,
                serialize=False,
            ),
        ),
    ]
