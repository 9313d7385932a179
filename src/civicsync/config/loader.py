"""Load a config file: YAML → older forms translated → models → derived table columns →
cross-references → secrets and DSNs from the environment.

Every problem is collected and raised together as one :class:`~civicsync.errors.ConfigError`
whose lines read ``FILE: path.to.key: what is wrong``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import ValidationError

from civicsync.config.legacy import drop_duplicated_columns, translate
from civicsync.config.models import Config
from civicsync.config.references import check_references
from civicsync.config.service_checks import check_service
from civicsync.config.tables import fill_columns
from civicsync.errors import ConfigDeprecationWarning, ConfigError, ConfigProblem

REFERENCE_CONFIG_NAME = "civicsync.yaml"
CONFIG_ENV = "CIVICSYNC_CONFIG"


def reference_config_path() -> Path:
    """The reference deployment's config shipped inside the package."""
    return Path(str(resources.files("civicsync.reference").joinpath(REFERENCE_CONFIG_NAME)))


def default_config_path() -> Path:
    """``$CIVICSYNC_CONFIG`` if set, else the bundled reference config."""
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else reference_config_path()


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config with its secrets and DSNs resolved from the environment."""

    path: Path
    model: Config
    dsns: Mapping[str, str]
    secrets: Mapping[str, bytes] = field(repr=False)
    deprecations: tuple[ConfigProblem, ...] = ()  # older forms the file uses (each was also warned about)

    def dsn(self, connection: str, role: str = "admin") -> str:
        """The DSN of a declared connection; ``role`` ('capture', 'apply', 'batch', 'reconcile', 'api')
        picks the least-privilege DSN the connection declares for that work (the main DSN when it
        declares none)."""
        return self.dsns.get(f"{connection}:{role}", self.dsns[connection])


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    # pydantic puts union-member tags into the location (e.g. 'keep_last', 'literal['keep']');
    # they are not keys of the file, so leave them out of the path the user sees.
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p.endswith("Mask")))]
    return ".".join(parts) or "(top level)"


def _pydantic_problems(file: str, exc: ValidationError) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors():
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt?)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        problems.append(ConfigProblem(file, _loc_to_path(err["loc"]), msg))
    # A union error is reported once per member; keep one line per (path, message).
    return list(dict.fromkeys(problems))


def _dsn(value: str, timeout: int) -> tuple[str | None, str | None]:
    """``(DSN with the connection's connect timeout, None)``, or ``(None, why it is not a DSN)``.

    The timeout goes into the DSN itself so every driver that opens it (psycopg 3, and psycopg2 for
    replication) gives up on a silent server alike; a DSN that sets ``connect_timeout`` keeps its own.
    """
    try:
        params = conninfo_to_dict(value)
    except psycopg.ProgrammingError as exc:
        # libpq's message may quote a piece of the DSN (a password, even): name only an unknown option.
        detail = str(exc).strip() if str(exc).startswith("invalid connection option") else "cannot be parsed"
        return None, f"is not a valid PostgreSQL DSN ({detail}); use key=value pairs or a postgresql:// URI"
    if not all(p.strip().isdigit() for p in str(params.get("port", "5432")).split(",")):
        return None, "is not a valid PostgreSQL DSN (the port is not a number)"
    if "connect_timeout" in params:
        return value, None
    return make_conninfo(value, connect_timeout=timeout), None


def _resolve_env(file: str, model: Config, environ: Mapping[str, str]) -> tuple[
    dict[str, str], dict[str, bytes], list[ConfigProblem]
]:
    problems: list[ConfigProblem] = []
    dsns: dict[str, str] = {}
    for name, conn in model.connections.items():
        for role, var in (("admin", conn.dsn_env), ("capture", conn.capture_dsn_env), ("apply", conn.apply_dsn_env),
                          ("batch", conn.batch_dsn_env), ("reconcile", conn.reconcile_dsn_env),
                          ("api", conn.api_dsn_env)):
            if var is None:
                continue
            where = f"connections.{name}.{'dsn_env' if role == 'admin' else f'{role}_dsn_env'}"
            value = environ.get(var)
            if not value:
                problems.append(ConfigProblem(file, where, f"environment variable {var} is not set"))
                continue
            dsn, problem = _dsn(value, conn.connect_timeout_seconds)
            if dsn is None:
                problems.append(ConfigProblem(file, where, f"environment variable {var} {problem}"))
            else:
                dsns[name if role == "admin" else f"{name}:{role}"] = dsn
    secrets: dict[str, bytes] = {}
    for name, ref in model.secrets.items():
        value = environ.get(ref.env)
        if not value:
            problems.append(ConfigProblem(
                file, f"secrets.{name}.env", f"environment variable {ref.env} is not set"))
        elif len(value) < ref.min_length:
            problems.append(ConfigProblem(
                file, f"secrets.{name}.env",
                f"environment variable {ref.env} is shorter than {ref.min_length} characters"))
        else:
            secrets[name] = value.encode()
    return dsns, secrets, problems


def parse_config(raw: Any, file: str, environ: Mapping[str, str] | None = None, *,
                 resolve_env: bool = True) -> LoadedConfig:
    """Validate an already-parsed YAML document. Raises ConfigError listing every problem.

    ``resolve_env=False`` checks everything but the environment (no DSN or secret is read; a
    department's CI can validate a config without them): the result then holds no DSNs or secrets.
    """
    environ = os.environ if environ is None else environ
    if not isinstance(raw, dict):
        raise ConfigError([ConfigProblem(file, "(top level)", "the file must hold a mapping of keys")])
    raw, old_forms, ambiguous = translate(raw)
    problems = [ConfigProblem(file, path, msg) for path, msg in ambiguous]
    try:
        model = Config.model_validate(raw)
    except ValidationError as exc:
        problems += _pydantic_problems(file, exc)
        # Still report missing environment variables we can find, so one run lists everything.
        if resolve_env:
            problems += _env_problems_from_raw(file, raw, environ)
        raise ConfigError(problems) from None
    model, duplicated = drop_duplicated_columns(model)
    model, undeclared = fill_columns(model)
    problems += [ConfigProblem(file, path, msg) for path, msg in undeclared]
    if not undeclared:  # a table without its columns would make every check on it a false alarm
        problems += [ConfigProblem(file, path, msg) for path, msg in check_references(model) + check_service(model)]
    dsns: dict[str, str] = {}
    secrets: dict[str, bytes] = {}
    if resolve_env:
        dsns, secrets, env_problems = _resolve_env(file, model, environ)
        problems += env_problems
    if problems:
        raise ConfigError(problems)
    deprecations = tuple(ConfigProblem(file, path, msg) for path, msg in old_forms + duplicated)
    for form in deprecations:
        warnings.warn(ConfigDeprecationWarning(str(form)), stacklevel=2)
    return LoadedConfig(path=Path(file), model=model, dsns=dsns, secrets=secrets, deprecations=deprecations)


def _env_problems_from_raw(file: str, raw: dict[str, Any], environ: Mapping[str, str]) -> list[ConfigProblem]:
    problems = []
    for section, key in (("connections", "dsn_env"), ("secrets", "env")):
        entries = raw.get(section)
        if not isinstance(entries, dict):
            continue
        for name, entry in entries.items():
            var = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(var, str) and var and not environ.get(var):
                problems.append(ConfigProblem(
                    file, f"{section}.{name}.{key}", f"environment variable {var} is not set"))
    return problems


def load_config(path: Path | str | None = None, environ: Mapping[str, str] | None = None, *,
                resolve_env: bool = True) -> LoadedConfig:
    """Read and validate a config file (default: ``$CIVICSYNC_CONFIG`` or the reference config);
    ``resolve_env=False``: see :func:`parse_config`."""
    path = Path(path) if path is not None else default_config_path()
    return parse_config(read_yaml(path), str(path), environ, resolve_env=resolve_env)


def read_yaml(path: Path) -> Any:
    """The parsed YAML document of a config file; a :class:`ConfigError` when it cannot be read or parsed."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, "(file)", f"cannot read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(file, "(file)", f"not a UTF-8 text file (byte {exc.start}: "
                                                         f"{exc.reason}); is it the right file?")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem(file, where, f"not valid YAML: {problem}")]) from None
    except (RecursionError, ValueError) as exc:  # nesting deeper than Python's stack, a 5,000-digit number
        raise ConfigError([ConfigProblem(file, "(file)", f"not a usable config ({type(exc).__name__}: nested too"
                                                         " deeply or a number too long)")]) from None
    return raw
