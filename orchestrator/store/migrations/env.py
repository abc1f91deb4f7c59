"""Alembic environment: run by `Store` with a live connection in `config.attributes`."""

from alembic import context
from sqlalchemy import create_engine

from orchestrator.store import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # the `alembic` command line: make our own
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as connection:
            _run(connection)
    else:
        _run(connection)


def _run(connection) -> None:  # noqa: ANN001
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True)  # SQLite alters tables by copy-and-move
    with context.begin_transaction():
        context.run_migrations()


run()
