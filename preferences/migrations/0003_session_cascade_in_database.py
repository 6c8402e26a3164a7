"""Anonymous preferences go with their browser session even when something other than
the ORM deletes it (raw SQL housekeeping, another service sharing the database): the
foreign key cascades in PostgreSQL itself, not only in Django's Python-side emulation."""

from django.db import migrations

FORWARD = """
DO $$
DECLARE name text;
BEGIN
    SELECT conname INTO name FROM pg_constraint
    WHERE conrelid = 'refresh_preferences'::regclass AND contype = 'f'
      AND confrelid = 'django_session'::regclass;
    EXECUTE format('ALTER TABLE refresh_preferences DROP CONSTRAINT %I', name);
    ALTER TABLE refresh_preferences ADD CONSTRAINT refresh_preferences_session_cascade
        FOREIGN KEY (session_id) REFERENCES django_session (session_key)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
END $$;
"""

BACKWARD = """
ALTER TABLE refresh_preferences DROP CONSTRAINT refresh_preferences_session_cascade;
ALTER TABLE refresh_preferences ADD CONSTRAINT refresh_preferences_session_id_fk
    FOREIGN KEY (session_id) REFERENCES django_session (session_key)
    DEFERRABLE INITIALLY DEFERRED;
"""


class Migration(migrations.Migration):
    dependencies = [("preferences", "0002_seed_refresh_policies")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
