"""The store's schema: SQLAlchemy 2.0 models of plans, runs, steps, checkpoints, energy samples,
fits, jobs, run events and evaluation scores (created and changed only through the Alembic migrations in
migrations/), and what a run's status means when its driver is gone."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Plan(Base):
    __tablename__ = "plans"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32), default="plan")
    inputs: Mapped[dict] = mapped_column(JSON)
    outputs: Mapped[dict] = mapped_column(JSON)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    preset: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(32), default="created")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime)
    host: Mapped[str | None] = mapped_column(String(255))
    code_version: Mapped[str | None] = mapped_column(String(64))
    ray_address: Mapped[str | None] = mapped_column(String(255))
    job_id: Mapped[str | None] = mapped_column(String(128))
    plan_id: Mapped[str | None] = mapped_column(ForeignKey("plans.id", ondelete="SET NULL"))
    storage_path: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)
    waited_s: Mapped[float] = mapped_column(Float, default=0.0)  # carbon-aware delay
    paused_s: Mapped[float] = mapped_column(Float, default=0.0)  # carbon-aware suspensions
    driver: Mapped[str | None] = mapped_column(String(255))  # "host:pid:start" of its driver
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)  # the driver, alive


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_steps_run_step"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(Integer)  # tokens seen so far
    loss: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    grad_norm: Mapped[float | None] = mapped_column(Float)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    mfu: Mapped[float | None] = mapped_column(Float)
    memory_bytes: Mapped[int | None] = mapped_column(Integer)
    time: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_checkpoints_run_step"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class EnergySample(Base):
    __tablename__ = "energy"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    node: Mapped[str] = mapped_column(String(255))
    device: Mapped[str] = mapped_column(String(255))  # "gpu:<uuid>", "cpu", "ram"
    time: Mapped[datetime] = mapped_column(DateTime)  # end of the sampling window
    window_s: Mapped[float] = mapped_column(Float)
    joules: Mapped[float] = mapped_column(Float)
    watts: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(32))  # nvml | nvml-power | rapl | estimate


class Fit(Base):
    """A scaling-law fit L(N, D) = E + A/N^alpha + B/D^beta learned from runs (or typed in)."""
    __tablename__ = "fits"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    constants: Mapped[dict] = mapped_column(JSON)  # E, A, B, alpha, beta
    details: Mapped[dict] = mapped_column(JSON)  # intervals, residuals, runs used


class Job(Base):
    """A queued training job (`schedule add`), started by `schedule run`."""
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(32), default="queued")
    preset: Mapped[str] = mapped_column(String(64))
    options: Mapped[dict] = mapped_column(JSON)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    message: Mapped[str | None] = mapped_column(Text)


class RunEvent(Base):
    """Something that happened to a run besides steps: wait, pause, resume, budget stop,
    worker restart, checkpoint fallback, meter failure."""
    __tablename__ = "run_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    time: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    details: Mapped[dict] = mapped_column(JSON, default=dict)


class EvalScore(Base):
    """Zero-shot multiple-choice accuracy of a run at a checkpoint (`train --eval-every`): one
    row per task, as LLaMA §3.7 (Figure 2) tracks it during training."""
    __tablename__ = "eval_scores"
    __table_args__ = (UniqueConstraint("run_id", "step", "task", name="uq_eval_scores_run_step_task"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(Integer)  # tokens trained at that step
    task: Mapped[str] = mapped_column(String(128))
    n: Mapped[int] = mapped_column(Integer)  # items scored
    acc: Mapped[float] = mapped_column(Float)
    acc_norm: Mapped[float] = mapped_column(Float)
    time: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


RUN_STATUSES = ("created", "waiting", "running", "paused", "completed", "failed",
                "interrupted", "budget-stopped")


LIVE_STATUSES = ("created", "waiting", "running", "paused")
HEARTBEAT_S = 15.0  # how often a driver says it is alive
STALE_S = 120.0  # a driver on another host that has not said so for this long is gone


def driver_id() -> str:
    """This process as a run's driver: host, pid and the process's start time (pids recur)."""
    import psutil

    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time():.0f}"


def driver_alive(driver: str | None, heartbeat_at: datetime | None,
                 now: datetime | None = None) -> bool | None:
    """Whether a run's driver still runs: on this host, its process is checked; elsewhere
    its heartbeat must be recent. None when the run records no driver (older runs)."""
    import psutil

    if not driver:
        return None
    host, pid, start = driver.rsplit(":", 2)
    if host == socket.gethostname():
        try:
            return abs(psutil.Process(int(pid)).create_time() - float(start)) < 2
        except (psutil.Error, ValueError):
            return False
    if heartbeat_at is None:
        return False
    return ((now or utcnow()) - heartbeat_at).total_seconds() < STALE_S


def shown_status(run: Run) -> str:
    """A live status whose driver is gone (killed, machine lost) is shown as `lost`."""
    if run.status in LIVE_STATUSES and driver_alive(run.driver, run.heartbeat_at) is False:
        return "lost"
    return run.status
