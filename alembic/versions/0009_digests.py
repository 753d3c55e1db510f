"""digests: deliveries coalesced into a digest, resumed sends, the daily summary e-mail

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

import app.models.common  # noqa: F401  (UTCDateTime)
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(
            sa.Column(
                "digest_key",
                sqlmodel.sql.sqltypes.AutoString(length=64),
                nullable=False,
                server_default="",
            )
        )
        batch.add_column(
            sa.Column("resumed", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_index(op.f("ix_deliveries_digest_key"), "deliveries", ["digest_key"])
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("daily_digest", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "daily_digests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("day", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("sent_at", app.models.common.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", app.models.common.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_daily_digests_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daily_digests")),
        sa.UniqueConstraint("user_id", "day", name="uq_daily_digest_user_day"),
    )
    op.create_index(op.f("ix_daily_digests_user_id"), "daily_digests", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_daily_digests_user_id"), table_name="daily_digests")
    op.drop_table("daily_digests")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("daily_digest")
    op.drop_index(op.f("ix_deliveries_digest_key"), table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("resumed")
        batch.drop_column("digest_key")
