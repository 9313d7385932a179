"""One exception tree (issue 12, Required 3): every public exception of civicsync joins the tree
drawn in civicsync.errors, is named in that drawing, and survives pickling whatever its constructor
takes; psycopg 3 and psycopg2 errors get their SQLSTATE through the same function."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
from typing import Any

import psycopg
import psycopg2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import civicsync
from civicsync import errors
from civicsync.db.errors import classify, is_permanent, is_transient, sqlstate_of
from civicsync.errors import CivicsyncError, ConfigProblem, TransientError
from civicsync.localpg import LocalPostgres

# Not errors: signals raised and caught inside one package (a stop or a fence is in the tree, under Interrupted).
PRIVATE_SIGNALS = {"NeedsIsolation", "TooDifferent", "NotCompilable", "Unavailable"}
NOT_YET: tuple[str, ...] = ()  # modules left out of the walk (none now)


def _modules() -> list[Any]:
    names = [m.name for m in pkgutil.walk_packages(civicsync.__path__, "civicsync.")]
    return [importlib.import_module(n) for n in names if not n.startswith(NOT_YET) and not n.endswith("__main__")]


def _exceptions() -> list[type[BaseException]]:
    found = []
    for module in _modules():
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found.append(obj)
    return found


def _tree(cls: type[CivicsyncError] = CivicsyncError) -> list[type[CivicsyncError]]:
    _modules()  # every subclass is defined once its module is imported
    out = [cls]
    for sub in cls.__subclasses__():
        if not sub.__module__.startswith(NOT_YET):
            out += _tree(sub)
    return out


def test_every_public_exception_joins_the_tree() -> None:
    outside = [f"{c.__module__}.{c.__name__}" for c in _exceptions()
               if not issubclass(c, CivicsyncError) and c.__name__ not in PRIVATE_SIGNALS]
    assert outside == []


def test_every_exception_of_the_tree_is_drawn_in_errors_docstring() -> None:
    doc = errors.__doc__ or ""
    missing = [c.__name__ for c in _tree() if c.__name__ not in PRIVATE_SIGNALS and f" {c.__name__} " not in doc]
    assert missing == []
    # and lives in civicsync.errors, except ApiError (it carries the API's response model) and the Kafka
    # package's own (the optional Kafka layer sits above the core and keeps its errors with it)
    elsewhere = [f"{c.__module__}.{c.__name__}" for c in _tree() if c.__module__ != "civicsync.errors"
                 and c.__name__ not in PRIVATE_SIGNALS and not c.__module__.startswith("civicsync.kafka.")]
    assert elsewhere == ["civicsync.api.errors.ApiError"]


def _instances(cls: type[CivicsyncError]) -> st.SearchStrategy[CivicsyncError]:
    """Instances of ``cls`` built through its real constructor, with generated arguments."""
    text = st.text(max_size=20)
    if not any("__init__" in vars(k) for k in cls.__mro__ if k.__module__.startswith("civicsync")):
        return st.builds(cls, text)
    overrides: dict[str, st.SearchStrategy[Any]] = {
        "problems": st.lists(st.builds(ConfigProblem, text, text, text), max_size=3),
        "last": st.builds(TransientError, text),
        "fields": st.just(()),
        "headers": st.none() | st.dictionaries(text, text, max_size=2),
        "failures": st.lists(text, max_size=3),
    }
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    for p in params:
        if p.name in overrides:
            kwargs[p.name] = overrides[p.name]
        elif p.name in ("attempts", "status"):
            kwargs[p.name] = st.integers(0, 999)
        elif p.name == "sqlstate":
            kwargs[p.name] = st.none() | st.from_regex(r"\A[0-9A-Z]{5}\Z") if p.default is None else \
                st.from_regex(r"\A[0-9A-Z]{5}\Z")
        else:
            kwargs[p.name] = text
    return st.builds(cls, **kwargs)


def _state(exc: BaseException) -> dict[str, Any]:
    return {k: (type(v), str(v)) if isinstance(v, BaseException) else v for k, v in vars(exc).items()}


@pytest.mark.parametrize("cls", [c for c in _tree() if c.__name__ not in PRIVATE_SIGNALS], ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_exception_survives_pickle(cls: type[CivicsyncError], data: st.DataObject) -> None:
    exc = data.draw(_instances(cls))
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert str(back) == str(exc) and back.args == exc.args
    assert _state(back) == _state(exc)


def test_psycopg3_and_psycopg2_errors_share_one_sqlstate_table(pg_server: LocalPostgres) -> None:
    # A real serialization-class error and a real syntax error from both drivers.
    dsn = pg_server.dsn("postgres")
    with psycopg.connect(dsn) as conn3, pytest.raises(psycopg.Error) as e3:
        conn3.execute("SELEC 1")
    conn2 = psycopg2.connect(dsn)
    try:
        with pytest.raises(psycopg2.Error) as e2, conn2.cursor() as cur:
            cur.execute("SELEC 1")
    finally:
        conn2.close()
    assert sqlstate_of(e3.value) == sqlstate_of(e2.value) == "42601"
    assert not is_transient(sqlstate_of(e3.value)) and not is_transient(sqlstate_of(e2.value))
    m3, m2 = classify(e3.value, "querying"), classify(e2.value, "querying")
    assert type(m3) is type(m2) is errors.DatabaseError and m3.sqlstate == m2.sqlstate == "42601"


def test_a_psycopg2_start_up_refusal_gets_its_sqlstate_from_the_same_table(pg_server: LocalPostgres) -> None:
    # psycopg2 reports a refused login as text only; sqlstate_of still gives its SQLSTATE, so the
    # replication stream stops for good instead of reconnecting forever, and classify() names it.
    # (psycopg 3 gives no SQLSTATE for a start-up refusal either: it stays a transient connection
    # failure there, as before.)
    dsn = pg_server.dsn("no_such_database")
    with pytest.raises(psycopg2.OperationalError) as e2:
        psycopg2.connect(dsn)
    assert sqlstate_of(e2.value) == "3D000" and is_permanent(e2.value)
    mapped = classify(e2.value, "connecting")
    assert type(mapped) is errors.DatabaseError and mapped.sqlstate == "3D000"
