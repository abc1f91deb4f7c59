"""The first schema: plans, runs, steps, checkpoints, energy samples.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("inputs", sa.JSON, nullable=False),
        sa.Column("outputs", sa.JSON, nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200)),
        sa.Column("preset", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("host", sa.String(255)),
        sa.Column("code_version", sa.String(64)),
        sa.Column("ray_address", sa.String(255)),
        sa.Column("job_id", sa.String(128)),
        sa.Column("plan_id", sa.String(32), sa.ForeignKey("plans.id", ondelete="SET NULL")),
        sa.Column("storage_path", sa.Text),
        sa.Column("message", sa.Text),
    )
    op.create_table(
        "steps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("loss", sa.Float),
        sa.Column("lr", sa.Float),
        sa.Column("grad_norm", sa.Float),
        sa.Column("tokens_per_s", sa.Float),
        sa.Column("mfu", sa.Float),
        sa.Column("memory_bytes", sa.Integer),
        sa.Column("time", sa.DateTime, nullable=False),
        sa.UniqueConstraint("run_id", "step", name="uq_steps_run_step"),
    )
    op.create_index("ix_steps_run_id", "steps", ["run_id"])
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("complete", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("run_id", "step", name="uq_checkpoints_run_step"),
    )
    op.create_index("ix_checkpoints_run_id", "checkpoints", ["run_id"])
    op.create_table(
        "energy",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("device", sa.String(255), nullable=False),
        sa.Column("time", sa.DateTime, nullable=False),
        sa.Column("window_s", sa.Float, nullable=False),
        sa.Column("joules", sa.Float, nullable=False),
        sa.Column("watts", sa.Float, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
    )
    op.create_index("ix_energy_run_id", "energy", ["run_id"])


def downgrade() -> None:
    for table in ("energy", "checkpoints", "steps", "runs", "plans"):
        op.drop_table(table)
