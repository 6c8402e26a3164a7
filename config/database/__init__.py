"""The project's PostgreSQL backend (ENGINE "config.database"): see base.py."""
