"""runs idempotency key: a repeated start with the same Idempotency-Key gets the same run

Revision ID: 406fffc382c7
Revises: 7a3c0e51d9b2
Create Date: 2026-12-07 16:46:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "406fffc382c7"
down_revision: str | None = "7a3c0e51d9b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("idempotency_hash", sa.String(length=64), nullable=True))
        # NULLs are distinct: runs started without a key never collide
        batch_op.create_index("ix_runs_principal_idempotency_key", ["principal_id", "idempotency_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_principal_idempotency_key")
        batch_op.drop_column("idempotency_hash")
        batch_op.drop_column("idempotency_key")
