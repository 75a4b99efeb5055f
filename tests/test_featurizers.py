import numpy as np
import pytest
from hamdex.models.featurizers import DenseFeaturizer, InputError, PixelFeaturizer, TextFeaturizer, load_featurizer

TEXTS = ["the cat sat on the mat", "dogs chase the cat", "stock markets fell", "markets and economy grow"]


def _reload(feat):
    params, tensors = feat.state()
    return load_featurizer(feat.kind, params, tensors)


def test_text_state_round_trip_gives_identical_features():
    feat = TextFeaturizer().fit(TEXTS)
    again = _reload(feat)
    x, y = feat.transform(TEXTS + ["an unseen cat"]), again.transform(TEXTS + ["an unseen cat"])
    assert x.shape == (5, feat.dim) and again.dim == feat.dim
    np.testing.assert_array_equal(x.toarray(), y.toarray())
    np.testing.assert_allclose(np.linalg.norm(x.toarray()[:4], axis=1), 1.0, rtol=1e-5)


def test_text_rejects_non_strings():
    feat = TextFeaturizer().fit(TEXTS)
    with pytest.raises(InputError) as err:
        feat.transform([[0.1, 0.2]])
    assert err.value.error_type == "input_type"


def test_pixels_scale_flatten_and_round_trip():
    imgs = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    feat = PixelFeaturizer().fit(imgs)
    x = _reload(feat).transform(imgs)
    assert x.shape == (5, 12) and x.dtype == np.float32
    np.testing.assert_allclose(x, imgs.reshape(5, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(feat.transform(imgs.reshape(5, -1)), x)  # flat input accepted


@pytest.mark.parametrize(
    ("bad", "error_type"),
    [(np.zeros((1, 5, 3)), "input_shape"), (np.full((1, 4, 3), 300), "input_range"), ([[[1, 2], [3]]], "input_shape")],
)
def test_pixels_reject_bad_images(bad, error_type):
    feat = PixelFeaturizer().fit(np.zeros((2, 4, 3), np.uint8))
    with pytest.raises(InputError) as err:
        feat.transform(bad)
    assert err.value.error_type == error_type


def test_dense_standardises_with_stored_statistics():
    x = np.random.default_rng(0).normal(3.0, 2.0, (100, 6)).astype(np.float32)
    x[:, 5] = 1.0  # a constant column stays finite
    feat = DenseFeaturizer().fit(x)
    z = _reload(feat).transform(x)
    np.testing.assert_allclose(z[:, :5].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :5].std(axis=0), 1, atol=1e-4)
    assert np.isfinite(z).all()


@pytest.mark.parametrize(
    ("bad", "error_type"),
    [
        ([[1.0] * 5], "input_shape"),
        ([[np.nan] * 6], "non_finite"),
        ([[np.inf] * 6], "non_finite"),
        (["text"], "input_type"),
    ],
)
def test_dense_rejects_bad_vectors(bad, error_type):
    feat = DenseFeaturizer().fit(np.ones((3, 6)))
    with pytest.raises(InputError) as err:
        feat.transform(bad)
    assert err.value.error_type == error_type
