"""schemathesis fuzzes every operation of the live /openapi.json with a key holding every scope: no 5xx,
status codes, content types, headers and bodies as documented, schema-invalid input refused, auth
enforced. Not checked: that every schema-valid request is accepted; a valid-looking forecast for a
scheme the portal does not have is rightly refused (422 naming scheme_id), which no schema can say."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import BaseSchema, Case, GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from civicsync.runtime.state import ServiceState, WorkerState
from fix_api import RunningApi, serve


@pytest.fixture(scope="module")
def fuzzed(api: RunningApi) -> Iterator[tuple[str, str]]:
    """A second server over the same databases whose service reports every CDC worker running
    (so /ready answers 200, as in a healthy service); yields (base URL, key)."""
    state = ServiceState()
    state.workers = {"all": WorkerState("all", [n for n, f in api.config.model.flows.items() if f.streams],
                                        phase="running")}
    server = serve(api.config, state)
    try:
        yield server.url, api.keys["all"]
    finally:
        server.stop()


OPERATIONS = {  # every operation of the document, and whether it takes input to get wrong
    ("POST", "/api/v1/forecasts"): True, ("POST", "/api/v1/alerts"): True,
    ("GET", "/api/v1/dead-letters"): True, ("POST", "/api/v1/dead-letters/replay"): True,
    ("GET", "/api/v1/status"): False, ("GET", "/health"): False, ("GET", "/ready"): False, ("GET", "/metrics"): False,
}
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for (m, p), has_input in OPERATIONS.items() if has_input]


@pytest.fixture(scope="module")
def api_schema(fuzzed: tuple[str, str]) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed[0]}/openapi.json")


def test_the_fuzzed_operations_are_all_there_are(api_schema: BaseSchema) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_every_operation_survives_fuzzing(api_schema: BaseSchema, fuzzed: tuple[str, str], method: str, path: str,
                                          mode: GenerationMode) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def fuzz(case: Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {fuzzed[1]}"}, timeout=60,
                               excluded_checks=[positive_data_acceptance])

    fuzz()
