"""Rewrite a config file written in an older form (:mod:`civicsync.config.legacy`) in the current one.

The file is read as data and written back with PyYAML, so the result holds the same settings but
none of the original's comments, and its layout is PyYAML's. A file that already uses the current
form is returned unchanged, comments and all.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from civicsync.config.legacy import MIGRATE_HINT, duplicated_columns, translate
from civicsync.config.loader import parse_config, read_yaml
from civicsync.config.models import Config
from civicsync.errors import ConfigDeprecationWarning, ConfigError, ConfigProblem

COMMENTS_NOTE = "YAML comments of the original are not kept"


@dataclass(frozen=True)
class Migration:
    """The new text of a config file and what changed (empty: it already used the current form)."""

    text: str
    changes: tuple[ConfigProblem, ...]


class _NoAliases(yaml.SafeDumper):
    """Write a value used twice (a YAML anchor in the original) out in full each time."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def migrate_file(path: Path) -> Migration:
    """The file at ``path`` in the current form. Raises :class:`ConfigError` (listing what to change by
    hand) when an old form is ambiguous or the file is not a valid config; the environment is not read."""
    file = str(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError([ConfigProblem(file, "(top level)", "the file must hold a mapping of keys")])
    new, translated, ambiguous = translate(raw)
    if ambiguous:
        raise ConfigError([ConfigProblem(file, p, m) for p, m in ambiguous])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigDeprecationWarning)
        loaded = parse_config(new, file, resolve_env=False)  # the whole file must be valid, not only its old forms
    hint = f" ({MIGRATE_HINT})"
    changes = tuple(ConfigProblem(file, p, m.replace(hint, "")) for p, m in translated) + tuple(
        ConfigProblem(file, d.path, d.message.replace(hint, "")) for d in loaded.deprecations)
    if not changes:
        return Migration(path.read_text(encoding="utf-8"), ())
    # The loaded model's columns are already derived: compare the file's own declarations.
    for cname, tname in duplicated_columns(Config.model_validate(new)):
        del new["connections"][cname]["tables"][tname]["columns"]
    header = f"# Migrated by `civicsync config migrate` from {path.name}; {COMMENTS_NOTE}.\n"
    body = yaml.dump(new, Dumper=_NoAliases, sort_keys=False, default_flow_style=None, width=120,
                     allow_unicode=True)
    return Migration(header + body, changes)
