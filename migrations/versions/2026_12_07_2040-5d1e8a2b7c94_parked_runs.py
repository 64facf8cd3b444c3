"""parked runs: a run waiting for a person holds no process, its team state is stored

Revision ID: 5d1e8a2b7c94
Revises: 406fffc382c7
Create Date: 2026-12-07 20:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "5d1e8a2b7c94"
down_revision: str | None = "406fffc382c7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "parked_runs",
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("principal_id", sa.String(length=64), nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("carry", sa.JSON(), nullable=False),
        sa.Column("parked_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deadline", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("answered_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index("ix_parked_runs_deadline", "parked_runs", ["deadline"])
    op.create_index("ix_parked_runs_principal", "parked_runs", ["principal_id"])


def downgrade() -> None:
    op.drop_index("ix_parked_runs_principal", table_name="parked_runs")
    op.drop_index("ix_parked_runs_deadline", table_name="parked_runs")
    op.drop_table("parked_runs")
