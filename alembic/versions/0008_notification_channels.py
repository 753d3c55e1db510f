"""notification channels: a user's Telegram, Discord, Kakao, web-push, FCM and extra e-mail

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 17:00:00

The addresses themselves are vault secrets (owner table ``notification_channels``);
this table holds only what a page may show and the channel's state.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

import app.models.common  # noqa: F401  (UTCDateTime)
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_channels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("label", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("hint", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("address_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("verify_token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("gone_at", app.models.common.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", app.models.common.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.models.common.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notification_channels_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_channels")),
    )
    op.create_index(op.f("ix_notification_channels_user_id"), "notification_channels", ["user_id"])
    op.create_index(
        op.f("ix_notification_channels_address_hash"), "notification_channels", ["address_hash"]
    )
    # A delivery to a user's channel is named "<kind>:<channel id>" (one row per device).
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column(
            "channel",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=16),
            type_=sqlmodel.sql.sqltypes.AutoString(length=32),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column(
            "channel",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=32),
            type_=sqlmodel.sql.sqltypes.AutoString(length=16),
            existing_nullable=False,
        )
    op.drop_index(op.f("ix_notification_channels_address_hash"), table_name="notification_channels")
    op.drop_index(op.f("ix_notification_channels_user_id"), table_name="notification_channels")
    op.drop_table("notification_channels")
