"""Alembic's environment: it migrates the connection that app.core.migrate hands over in
`config.attributes["connection"]` (already in a transaction, holding the migration lock), and
never opens one of its own: there is no alembic.ini and no URL here."""

from alembic import context

from app.core.db import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `trainserve db upgrade` (app.core.migrate)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things: batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
