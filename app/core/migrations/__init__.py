"""Alembic's migration environment for the job store (run through app.core.migrate)."""
