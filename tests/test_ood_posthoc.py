"""The post-hoc detectors against pytorch-ood (test-only reference) on the same arrays, after each module's
documented convention transform (peekflow: higher = more ID), or against the paper's formula where pytorch-ood has
no such method; plus what every fitted and last-layer method shares."""

import numpy as np
import pytest

pytest.importorskip("pytorch_ood")
from pytorch_ood import detector as pood  # noqa: E402

from ood_reference import K, assert_close, float64, head, problem, scores, store, t, tlabels  # noqa: E402
from peekflow.ood.base import available, detector_class  # noqa: E402
from peekflow.ood.posthoc import Fitted  # noqa: E402

W, B, TRAIN, TEST = problem()
Z = t(TEST.logits)
X, XTRAIN, Y = t(TEST.features), t(TRAIN.features), tlabels(TRAIN)


def test_logit_methods():
    assert_close(scores("maxlogit", TRAIN, TEST), -pood.MaxLogit.score(Z))
    p = Z.softmax(1)
    unclipped = ((p >= 1e-7) & (p <= 1 - 1e-7)).all(1).numpy()  # pytorch-ood clips p there; peekflow does not
    assert unclipped.mean() > 0.5
    assert_close(scores("entropy", TRAIN, TEST)[unclipped], -pood.Entropy.score(Z)[unclipped])
    assert_close(scores("gen", TRAIN, TEST)[unclipped], -K * pood.GEN.score(Z, gamma=0.1)[unclipped])
    gen3 = -3 * pood.GEN.score(Z, gamma=0.5, M=3)
    assert_close(scores("gen", TRAIN, TEST, gamma=0.5, top=3)[unclipped], gen3[unclipped])
    with float64():
        reference = pood.KLMatching(None).fit_logits(t(TRAIN.logits), Y).predict_logits(Z)
    assert_close(scores("klmatching", TRAIN, TEST), -reference)


@pytest.mark.parametrize("percentile", [90, 65])
def test_activation_shaping(percentile):
    with float64():
        linear = head(TRAIN)
        react = pood.ReAct(None, linear, percentile=percentile / 100).fit_feature_maps(XTRAIN, Y)
        assert_close(scores("react", TRAIN, TEST, percentile=percentile), -react.predict_feature_maps(X))
        maps = X[:, :, None, None]  # pytorch-ood shapes maps; peekflow's pooled features are 1 x 1 maps
        for variant in ["ash-p", "ash-b", "ash-s"]:
            ash = pood.ASH(None, lambda m: linear(m.flatten(1)), variant=variant, percentile=percentile / 100)
            ours = scores(variant.replace("-", "_"), TRAIN, TEST, percentile=percentile)
            assert_close(ours, -ash.predict_feature_maps(maps))
        scale = pood.SCALE(None, lambda m: linear(m.flatten(1)), percentile=percentile / 100)
        assert_close(scores("scale", TRAIN, TEST, percentile=percentile), -scale.predict_feature_maps(maps))


def test_last_layer_methods():
    dice = pood.DICE(None, t(W).float(), t(B).float(), p=0.7).fit_features(XTRAIN.float(), Y)  # float32 only
    assert_close(scores("dice", TRAIN, TEST), -dice.predict_features(X.float()))
    with float64():
        linear = head(TRAIN)
        gradnorm = pood.GradNorm(linear, param_filter=lambda name: name == "weight")
        assert_close(scores("gradnorm", TRAIN, TEST), -K * gradnorm.predict(X))
        vim = pood.ViM(None, 6, t(W), t(B)).fit_features(XTRAIN, Y)  # float32 inside: energy - vlogit cancels
        assert_close(scores("vim", TRAIN, TEST, dim=6), -vim.predict_features(X), floor=1.0)
        residual = -((X.float() - vim.u) @ vim.principal_subspace).norm(dim=1)  # ViM's residual space, float32
        assert_close(scores("residual", TRAIN, TEST, dim=6), residual)


def test_fitted_feature_methods():
    with float64():
        linear = head(TRAIN)
        n = len(TRAIN.labels)  # pytorch-ood's RMD: covariances summed, not averaged
        assert_close(scores("rmds", TRAIN, TEST), -n * pood.RMD(None).fit_features(XTRAIN, Y).predict_features(X))
        she = pood.SHE(None, linear).fit_features(XTRAIN, Y)
        assert_close(scores("she", TRAIN, TEST), -she.predict_features(X))
        gmm = pood.GMM(None).fit_features(XTRAIN, Y)
        assert_close(scores("gmm", TRAIN, TEST), -gmm.predict_features(X))
    # these three cast features to float32 inside pytorch-ood
    linear, x, xtrain = head(TRAIN).float(), X.float(), XTRAIN.float()
    nnguide = pood.NNGuide(None, linear, k=10).fit_features(xtrain, Y)
    assert_close(scores("nnguide", TRAIN, TEST, k=10), -nnguide.predict_features(x))
    assert_close(scores("fdbd", TRAIN, TEST), -pood.fDBD(None, linear).fit_features(xtrain).predict_features(x))
    for alpha in [0.0, 0.01]:
        nci = pood.NCI(None, linear, alpha=alpha).fit_features(xtrain)
        assert_close(scores("nci", TRAIN, TEST, alpha=alpha), -nci.predict_features(x))


def test_residual_and_vim_by_their_formula():
    """Residual and ViM written out with numpy (eigen-decomposition of the second moment about u = -pinv(W) b)."""
    u = -np.linalg.pinv(W) @ B
    centred = TRAIN.features.astype(np.float64) - u
    _, vectors = np.linalg.eigh(centred.T @ centred / len(centred))
    residual_space = vectors[:, : W.shape[1] - 8]  # default dim: D / 2 = 8
    norm = np.linalg.norm((TEST.features - u) @ residual_space, axis=1)
    assert_close(scores("residual", TRAIN, TEST), -norm)
    alpha = TRAIN.logits.astype(np.float64).max(1).mean() / np.linalg.norm(centred @ residual_space, axis=1).mean()
    energy = np.log(np.exp(TEST.logits.astype(np.float64)).sum(1))
    assert_close(scores("vim", TRAIN, TEST), energy - alpha * norm)


FITTED = [m for m in available() if issubclass(detector_class(m), Fitted) and not detector_class(m).prototype_bank]


@pytest.mark.parametrize("method", FITTED)
def test_fitted_methods_refuse_their_own_fit_images_and_have_bank_variants(method):
    leaking = store("leak", TRAIN.features[:10], W, B, np.full(10, -1))
    leaking.paths = TRAIN.paths[:10]
    settings = {"k": 5} if "k" in detector_class(method).sweeps else {}
    with pytest.raises(ValueError, match="reference bank"):
        scores(method, TRAIN, leaking, **settings)
    for bank in ["deepinversion", "deepdream"]:
        assert detector_class(f"{method}_{bank}").prototype_bank == bank


# bn_gaussian (needs_model) fits on the model, not a store: tests/test_bn_gaussian.py checks it the same way
@pytest.mark.parametrize("method", [m for m in available() if detector_class(m).needs_last_layer
                                    and not detector_class(m).needs_model])
def test_a_store_without_last_layer_fails_naming_method_and_store(method):
    bare = store("bare", TEST.features, W, B, TEST.labels)
    bare.last_layer = None
    train = store("bare_train", TRAIN.features, W, B, TRAIN.labels)
    train.last_layer = None  # the fit store (what fitted methods read W, b from), or the scored store
    with pytest.raises(ValueError, match=rf"{method}: feature store '/stores/bare(_train)?.h5' records no last layer"):
        scores(method, train, bare)


def test_each_method_documents_itself_and_sweeps_its_own_settings():
    import inspect
    import sys

    for name in available():
        cls = detector_class(name)
        assert "score" in (sys.modules[cls.__module__].__doc__ or ""), name
        assert set(cls.sweeps) <= set(inspect.signature(cls.__init__).parameters), name


CHUNKED = [m for m in available() if not detector_class(m).prototype_bank and not detector_class(m).needs_images
           and not detector_class(m).needs_model]


@pytest.mark.parametrize("method", CHUNKED)
def test_scores_do_not_depend_on_the_row_chunks(method, monkeypatch):
    """The reference problem fits in one 1024-row chunk; with chunks of a few rows every accumulation (class sums,
    X^T X, running top-k, the GMM's log-sum over classes) spans many chunks and must give the same scores."""
    from peekflow.ood import nnguide, posthoc

    whole = scores(method, TRAIN, TEST)
    monkeypatch.setattr(posthoc, "CHUNK", 7)
    monkeypatch.setattr(nnguide, "BANK_CHUNK", 13)
    monkeypatch.setattr(nnguide, "QUERY_CHUNK", 5)
    np.testing.assert_allclose(scores(method, TRAIN, TEST), whole, rtol=1e-6, atol=1e-9)
