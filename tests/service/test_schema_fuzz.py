"""Schemathesis over the app's own OpenAPI: every operation, generated requests (valid and not),
stateful sequences along the documented links; no 5xx and every answer as documented.

Runs in-process against the ASGI app (no server), over a small published folder, with a bounded
number of examples per operation so the whole run stays well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from service.app import create_app
from service.settings import Settings

from ..publishing import add_model, add_policy

EXAMPLES = 25  # per operation
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

# The schema is loaded when the module is collected (schemathesis.pytest.from_fixture, the lazy
# form, fails under pytest 9: it reads a private attribute pytest no longer has). Only the
# folder's name is needed for that: the app reads it per request, and the fixture below
# publishes into it before the first test runs.
_ROOT = Path(tempfile.gettempdir()) / f"autoaug-fuzz-{os.getpid()}" / "published"  # made by the fixture
app = create_app(Settings(published_dir=_ROOT, max_files=4))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
# A request the schema allows may still be refused for its content, which no JSON schema can
# express, each with its documented status: bytes that are not an image (415), an empty file
# (400), both a policy and a version for /augment (400), an image too large in pixels (413).
# Everything else (422 above all: a malformed parameter) still fails the check.
acceptance = schema.config.checks.positive_data_acceptance
acceptance.expected_statuses = [*acceptance.expected_statuses, "400", "413", "415"]
# And a request the schema forbids for its size (more files than maxItems) is refused with 413,
# which is a refusal as much as the check's 4xx list.
rejection = schema.config.checks.negative_data_rejection
rejection.expected_statuses = [*rejection.expected_statuses, "413"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
calls: list[str] = []  # every request made, for the summary in tests/artifacts/schema-fuzz.json


@pytest.fixture(scope="module", autouse=True)
def published() -> Iterator[Path]:
    add_policy(_ROOT)
    add_policy(_ROOT, magnitude=0.9, grid=False)  # a version without a stored grid: drawn on request
    add_model(_ROOT, accuracy=0.5)
    started = time.perf_counter()
    yield _ROOT
    seconds = time.perf_counter() - started
    shutil.rmtree(_ROOT.parent, ignore_errors=True)
    ARTIFACTS.mkdir(exist_ok=True)
    documented = {f"{method.upper()} {path}" for path, item in schema.raw_schema["paths"].items() for method in item}
    per_operation = Counter(call for call in calls if call.removesuffix(" (stateful)") in documented)
    summary = {
        "operations": len(documented),
        "operations_called": len({c.removesuffix(" (stateful)") for c in per_operation}),
        "requests": per_operation.total(),
        "per_operation": dict(sorted(per_operation.items())),
        "undocumented_method_probes": len(calls) - per_operation.total(),  # 405 with an Allow header
        "seconds": round(seconds, 1),
    }
    (ARTIFACTS / "schema-fuzz.json").write_text(json.dumps(summary, indent=1) + "\n")


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_answers_as_documented(case: schemathesis.Case) -> None:
    calls.append(f"{case.method} {case.path}")
    case.call_and_validate()  # every check: no 5xx, status code, content type, headers, body schema


def test_stateful_sequences_along_the_links() -> None:
    links = schema.raw_schema["paths"]["/policies"]["get"]["responses"]["200"]["links"]
    assert {"OnePolicy", "PolicyGrid"} <= set(links)

    class Counted(schema.as_state_machine()):  # type: ignore[misc]
        def after_call(self, response: schemathesis.Response, case: schemathesis.Case) -> None:
            calls.append(f"{case.method} {case.path} (stateful)")

    Counted.run(settings=settings(max_examples=10, stateful_step_count=4, deadline=None,
                                  suppress_health_check=list(HealthCheck)))
