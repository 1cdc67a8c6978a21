"""Schemathesis over every operation of /openapi.json: no 5xx, every answer as the schema says.

Runs on SQLite only: fuzzing looks for unhandled input, which is the same code on both
backends, and a second backend would double the time for little. The number of cases comes
from TIDINGS_FUZZ_CASES (5,000 by default; `make soak` asks for more), shared evenly among
the operations, so routes added later are fuzzed without any change here.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import authorized_client
from tests.integration.seed import Seeded, seed_workspace
from tidings.app import create_app
from tidings.bootstrap import prepare
from tidings.config import Settings
from tidings.runtime import Runtime
from tidings.workspaces import service as workspaces
from tidings.workspaces.schemas import Scope

pytestmark = pytest.mark.integration

CASES = int(os.environ.get("TIDINGS_FUZZ_CASES", "5000"))
WORKSPACE = "fuzzed"
CHECKS = [not_a_server_error, response_schema_conformance]
# Of the cases of an operation with ids in its path, the share sent to a real object.
REAL_ID_SHARE = 0.5


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, Seeded]]:
    data_dir: Path = tmp_path_factory.mktemp("tidings-fuzz")
    runtime = Runtime.from_settings(
        Settings(data_dir=data_dir, public_url="https://tidings.test", dev_mailbox=False)
    )
    prepare(runtime, run_migrations=True)
    workspace = workspaces.create_workspace(runtime.db, WORKSPACE)
    _, secret = workspaces.create_api_key(runtime.db, workspace["id"], "admin", [Scope.ADMIN])
    app = create_app(runtime)
    with authorized_client(app, secret) as client:
        seeded = seed_workspace(client, workspace["id"], runtime.secret_key)
    try:
        yield app, secret, seeded
    finally:
        runtime.close()


def _path_ids(seeded: Seeded, path: str) -> dict[str, str]:
    names = {"token": "unsubscribe_token"}
    if path.startswith("/t/c/"):
        names["token"] = "click_token"
    elif path.startswith("/t/o/"):
        names["token"] = "open_token"
    wanted = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return {
        name: seeded.ids[names.get(name, name)]
        for name in wanted
        if names.get(name, name) in seeded.ids
    }


def test_every_operation_answers_without_5xx_and_as_its_schema_says(fuzzed):
    app, secret, seeded = fuzzed
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 50, "the schema lost its operations"
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: dict[str, str] = {}
    # AJO's routes name the workspace in a header of their own.
    headers = {"Authorization": f"Bearer {secret}", "x-sandbox-name": WORKSPACE}
    chooser = random.Random(8)

    def fuzz(operation: Any, examples: int, round_: int) -> int:
        label = f"{operation.method.upper()} {operation.path}"
        real_ids = _path_ids(seeded, operation.path)
        before = sent[label]
        strategy = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @seed(round_)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def send(case: Any) -> None:
            if real_ids and chooser.random() < REAL_ID_SHARE:
                case.path_parameters = {**(case.path_parameters or {}), **real_ids}
            try:
                response = case.call(headers=headers)
            except Exception as error:  # the test client re-raises what the app did not handle
                failures.setdefault(label, f"{error!r}\n{case.as_curl_command()}"[:3000])
                return
            sent[label] += 1
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except FailureGroup as failure:
                failures.setdefault(label, str(failure)[:3000])

        send()
        return sent[label] - before

    # Operations with few inputs (no parameters, no body) run out of new cases early; later
    # rounds share what they left among the others.
    open_ended = list(operations)
    for round_ in range(1, 6):
        missing = CASES - sum(sent.values())
        if missing <= 0 or not open_ended:
            break
        examples = -(-missing // len(open_ended))
        open_ended = [op for op in open_ended if fuzz(op, examples, round_) >= examples]

    print(
        f"{sum(sent.values())} cases over {len(operations)} operations:", sorted(statuses.items())
    )
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert sum(sent.values()) >= CASES, (sum(sent.values()), sent)
    assert set(sent) == {f"{op.method.upper()} {op.path}" for op in operations}
    # Fuzzing that never got past validation would prove little about the handlers.
    assert sum(n for status, n in statuses.items() if status < 300) > len(operations), statuses
