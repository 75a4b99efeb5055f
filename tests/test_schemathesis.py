"""Property-based API tests: schemathesis generates requests, valid and invalid, for every operation of the app's
own /openapi.json and runs every check it has (``--checks all``): never a 5xx; every status code, header and body
as documented; a request the document calls valid is taken (2xx, or 404 / 409 where the collection's contents
decide) and one it calls invalid refused (issue 25: the document states every limit the server enforces, from the
app's settings and model). The app runs with API keys and every request carries an admin key, so the generated
requests reach the routes' own logic rather than stopping at 401. The stateful phase is tests/
test_schemathesis_stateful.py.

The document and the requests come from a started app that has loaded a tiny text model (a module-scoped
fixture), in-process through schemathesis's ASGI client. Seeded and bounded to run in CI in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hamdex.service.app import create_app, wait_ready
from schemathesis.engine import Status, events
from schemathesis.python import asgi

from tests import schemathesis_hooks  # noqa: F401  (the NDJSON serializer)
from tests.conftest import settings_for

ADMIN_KEY = "schemathesis-admin-key-0123"
MAX_EXAMPLES = 10  # per operation and phase
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def app(text_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    root = tmp_path_factory.mktemp("schemathesis")
    app = create_app(settings_for(text_model_dir, root, api_keys=f"{ADMIN_KEY} admin", batch_max_wait_ms=0))
    with asgi.get_client(app) as client:  # the first request starts the lifespan in schemathesis's event loop
        assert client.get("/livez").status_code == 200
        wait_ready(app, timeout=60)
        # what the generated requests will often name ("0" is a favourite), so they get past 404 more often
        assert client.post("/v1/collections", json={"name": "0"}, headers=AUTH).status_code == 201
        items = {"items": [{"id": "0", "input": "goal team", "metadata": {"n": 0}}]}
        for path in ("/v1/items", "/v1/collections/0/items"):
            assert client.post(path, json=items, headers=AUTH).status_code == 200
        yield app
    asgi.shutdown_lifespans()  # closes the collections


def run(schema: schemathesis.BaseSchema) -> tuple[list[str], set[str]]:
    """Run the phases of ``schema``'s config, as ``schemathesis run`` does: (every failure and error it met, the
    operations it tested)."""
    found, tested = [], set()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.status in (Status.SUCCESS, Status.FAILURE):
            tested.add(event.label)
            for check in (check for checks in event.recorder.checks.values() for check in checks):
                if check.failure_info is not None:
                    failure, sample = check.failure_info.failure, check.failure_info.code_sample
                    found.append(f"{event.label}: {failure.title}: {failure.message}\n{sample}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            found.append(f"{getattr(event, 'label', '')}: {event.info.format()}")
    return found, tested


def test_every_check_passes(app: FastAPI) -> None:
    """Examples, coverage and fuzzing (the stateful phase: tests/test_schemathesis_stateful.py), valid and invalid
    data, every check, seeded: what ``schemathesis run ... --checks all`` does, bounded."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)
    schema.config.update(headers=AUTH)  # on every request the run sends, as `-H` does
    schema.config.checks.update(included_check_names=["all"])
    schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
    schema.config.generation.update(max_examples=MAX_EXAMPLES)
    schema.config.seed = 25
    found, tested = run(schema)
    assert not found, "\n\n".join(found[:5])
    assert len(tested) == sum(len(operations) for operations in app.openapi()["paths"].values())  # every one
