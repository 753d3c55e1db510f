"""provider identities and OAuth flows in flight

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-24 12:00:00.000000

Written by hand. It branches from 0002 alongside 0003 (the vault); ``migrate``
upgrades to "heads", and a later merge revision joins the two.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.models.common  # noqa: F401  (UTCDateTime)


revision: str = '0004'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'user_identities',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column('created_at', app.models.common.UTCDateTime(timezone=True), nullable=False),
        sa.Column('last_login_at', app.models.common.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ['user_id'], ['users.id'],
            name=op.f('fk_user_identities_user_id_users'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_user_identities')),
        sa.UniqueConstraint('provider', 'subject', name=op.f('uq_user_identities_provider')),
    )
    with op.batch_alter_table('user_identities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_identities_user_id'), ['user_id'], unique=False)

    op.create_table(
        'oauth_flows',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('state_hash', sa.String(length=64), nullable=False),
        sa.Column('browser_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('nonce', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('code_verifier', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('next_path', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column('link_user_id', sa.Integer(), nullable=True),
        sa.Column('created_at', app.models.common.UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', app.models.common.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['link_user_id'], ['users.id'],
            name=op.f('fk_oauth_flows_link_user_id_users'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_flows')),
        sa.UniqueConstraint('state_hash', name=op.f('uq_oauth_flows_state_hash')),
    )
    with op.batch_alter_table('oauth_flows', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_flows_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('oauth_flows', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_flows_expires_at'))
    op.drop_table('oauth_flows')
    with op.batch_alter_table('user_identities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_identities_user_id'))
    op.drop_table('user_identities')
