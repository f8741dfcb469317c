"""Registry trust: version numbers never reused, promotion decisions, workers' devices.

- `models.versions_assigned`: the highest version number ever given (deleting versions lowers
  `latest_version`, never this), so a number names one set of weights for good.
- `jobs.promotion`: what a job's promotion rule decided, and why.
- `workers`: what each worker has (device kind and count), with a heartbeat.

The columns are spelled out, not taken from app.core.db, so that this revision stays what it
was when the models change.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(
            sa.Column("versions_assigned", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute("UPDATE models SET versions_assigned = latest_version")
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("promotion", sa.JSON(), nullable=True))
    op.create_table(
        "workers",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("device", sa.String(16), nullable=False),
        sa.Column("device_count", sa.Integer(), nullable=False),
        sa.Column("device_names", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("workers")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("promotion")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("versions_assigned")
