"""Evaluation scores: per run, checkpoint step and task, n, acc and acc_norm (`train
--eval-every`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_scores",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("task", sa.String(128), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("acc", sa.Float, nullable=False),
        sa.Column("acc_norm", sa.Float, nullable=False),
        sa.Column("time", sa.DateTime, nullable=False),
        sa.UniqueConstraint("run_id", "step", "task", name="uq_eval_scores_run_step_task"),
    )
    op.create_index("ix_eval_scores_run_id", "eval_scores", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_eval_scores_run_id", table_name="eval_scores")
    op.drop_table("eval_scores")
