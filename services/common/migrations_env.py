"""The body of every service's migrations/env.py:

    from services.common.migrations_env import run_env
    from services.tiering.store import metadata
    run_env(metadata)

Honours what run_migrations() passes in `config.attributes` (connection,
url, version_table), so each service keeps its own version table in a
shared database.
"""

from __future__ import annotations

from alembic import context

from services.common.db import make_engine


def _version_table(config) -> str:
    return (config.attributes.get("version_table")
            or config.get_main_option("version_table")
            or "alembic_version")


def _configure_and_run(connection, target_metadata, version_table: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=version_table,
        # SQLite cannot ALTER most things; batch mode recreates tables.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_env(target_metadata=None) -> None:
    config = context.config
    version_table = _version_table(config)
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")

    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata,
                          version_table=version_table, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection, target_metadata, version_table)
        return

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _configure_and_run(conn, target_metadata, version_table)
            conn.commit()
    finally:
        engine.dispose()
