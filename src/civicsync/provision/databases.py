"""`civicsync db init`: create each configured database, its schema and civicsync's control schema."""

from __future__ import annotations

from dataclasses import dataclass

from civicsync.config import LoadedConfig
from civicsync.db.migrate import apply_migrations, control_migrations, ensure_database, resolve_migrations


@dataclass(frozen=True)
class InitResult:
    """What `db init` did to one connection's database."""

    connection: str
    created: bool
    applied: list[str]


def init_databases(config: LoadedConfig) -> list[InitResult]:
    """Create missing databases, then apply their migrations and the control schema. Idempotent."""
    results = []
    control = control_migrations()
    for name, conn in config.model.connections.items():
        dsn = config.dsn(name)
        created = ensure_database(dsn)
        migrations = resolve_migrations(conn.migrations, config.path.parent) if conn.migrations else []
        applied = apply_migrations(dsn, [*migrations, *control])
        results.append(InitResult(name, created, applied))
    from civicsync.provision.roles import grant_roles
    from civicsync.provision.work_roles import grant_work_roles

    grant_roles(config)
    grant_work_roles(config)
    return results
