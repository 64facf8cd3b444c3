"""run checkpoints: a run with retries keeps its team's state after each turn, to resume from it; a run
parked on a tool's approval may have no team state yet (it resumes from its task)

Revision ID: 8c4f2a9d1e63
Revises: 5d1e8a2b7c94
Create Date: 2026-12-07 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "8c4f2a9d1e63"
down_revision: str | None = "5d1e8a2b7c94"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_checkpoints",
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("carry", sa.JSON(), nullable=False),
        sa.Column("at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id"),
    )
    with op.batch_alter_table("parked_runs") as batch:
        batch.alter_column("state", existing_type=sa.JSON(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("parked_runs") as batch:
        batch.alter_column("state", existing_type=sa.JSON(), nullable=False)
    op.drop_table("run_checkpoints")
