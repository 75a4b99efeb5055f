"""Golden codes: the tiny seeded checkpoints of tests/conftest.py, trained from fixed seeds, give exactly these codes
(hex, in models.bits's wire form). A change to training, a featurizer, a bottleneck, the read-out or the bit order
that moves any code fails here, however plausible the new codes look elsewhere. If the change is meant, regenerate
the values below from the fixtures and say why in the commit. Checked to match across runs and with 1 or 2 torch
threads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hamdex.models import bits, checkpoint

from tests.conftest import dense_vectors, digit_images, synthetic_texts

GOLDEN = {
    "text": ["9223", "9223", "92a3", "92a3", "9682", "9222", "92e2", "92a2", "92a6", "92a7"],
    "dense": ["66b0", "8045", "7445", "0434", "e7d5", "76b0", "6e91", "0430", "5455", "9431", "e355", "1490"],
    "pixels": [  # the two-member ensemble
        "149801f7", "149801f7", "149801f7", "149801f7", "149801e7", "149801f7",
        "149801e7", "149801f7", "149811f7", "149801f7", "149801f7", "149801f7",
    ],
}  # fmt: skip


FIXTURES = {"text": "text_model_dir", "dense": "dense_model_dir", "pixels": "pixel_model_dir"}


def _inputs(kind: str) -> Any:
    """Items spread over the training data: every 4th text (all four topics), 12 vectors, every 30th digit."""
    return {"text": synthetic_texts()[::4], "dense": dense_vectors()[:12], "pixels": digit_images()[::30]}[kind]


@pytest.mark.parametrize("kind", list(GOLDEN))
def test_the_fixture_models_give_the_pinned_codes(kind: str, request: pytest.FixtureRequest) -> None:
    model_dir: Path = request.getfixturevalue(FIXTURES[kind])
    hasher = checkpoint.load(model_dir, "cpu")
    codes = hasher.encode(_inputs(kind)).codes  # uint8 (n, n_bits // 8)
    assert [bits.to_wire(code, "hex") for code in codes] == GOLDEN[kind]
