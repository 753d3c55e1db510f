"""alert_rules.armed / armed_at: a repeating rule's armed state survives a handover

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24 23:30:00

Nullable, no default: existing rules derive their state from ``fire_count`` as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa

import app.models.common  # noqa: F401  (UTCDateTime)
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert_rules") as batch:
        batch.add_column(sa.Column("armed", sa.Boolean(), nullable=True))
        batch.add_column(
            sa.Column("armed_at", app.models.common.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("alert_rules") as batch:
        batch.drop_column("armed_at")
        batch.drop_column("armed")
