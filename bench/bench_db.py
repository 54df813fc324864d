"""A benchmark's own database on the project's server: dropped, created and migrated."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psycopg2 import sql

from local.embedded_pg import embedded_server
from precompute import database, migrations
from precompute.settings import Settings


def recreate_database(base: Settings, name: str) -> str:
    """Start the embedded server if it is the one in use, then give `name` a fresh, migrated
    database; returns its admin URL."""
    if base.embedded_database:
        embedded_server(base).start()
    admin = database.admin_url(base)
    conn = database.connect(admin)
    conn.autocommit = True  # CREATE and DROP DATABASE refuse to run in a transaction
    try:
        with conn.cursor() as cur:
            identifier = sql.Identifier(name)
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier))
            cur.execute(sql.SQL("CREATE DATABASE {}").format(identifier))
    finally:
        conn.close()
    url = admin.rsplit("/", 1)[0] + "/" + name
    migrations.migrate(url, base)
    return url
