"""Model aliases: a user-chosen name (`production`) for one version of a model.

The columns are spelled out, not taken from app.core.db, so that this revision stays what it
was when the models change.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_aliases",
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("model_name", "alias"),
        sa.ForeignKeyConstraint(["model_name"], ["models.name"]),
        sa.ForeignKeyConstraint(
            ["model_name", "version"], ["model_versions.model_name", "model_versions.version"]
        ),
    )


def downgrade() -> None:
    op.drop_table("model_aliases")
