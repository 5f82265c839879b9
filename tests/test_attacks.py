import warnings

import pytest
import torch
import torchattacks
from hypothesis import given, settings
from hypothesis import strategies as st

from attrobust.attacks import ATTACKS, fgsm, ifia, pgd, pgd_loop, project, random_point
from attrobust.attributions import integrated_gradients
from attrobust.metrics.similarity import kendall_tau, saliency_map, topk_intersection
from conftest import make_tiny_cnn


@pytest.mark.parametrize("steps", [1, 7])
def test_pgd_linf_equals_torchattacks_without_random_start(tiny_cnn, tiny_batch, steps):
    x, y = tiny_batch
    ours = pgd(tiny_cnn, x, y, eps=0.1, step_size=0.02, steps=steps, random_start=False)
    ref = torchattacks.PGD(tiny_cnn, eps=0.1, alpha=0.02, steps=steps, random_start=False)(x, y)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_pgd_l2_equals_torchattacks_without_random_start(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    ours = pgd(tiny_cnn, x, y, eps=0.5, step_size=0.1, steps=5, norm="l2", random_start=False)
    ref = torchattacks.PGDL2(tiny_cnn, eps=0.5, alpha=0.1, steps=5, random_start=False)(x, y)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_fgsm_equals_torchattacks(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    torch.testing.assert_close(
        fgsm(tiny_cnn, x, y, eps=0.05), torchattacks.FGSM(tiny_cnn, eps=0.05)(x, y), atol=1e-6, rtol=0
    )


def test_pgd_random_start_is_seeded_and_raises_loss(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    a = pgd(tiny_cnn, x, y, eps=0.1, step_size=0.02, steps=5, generator=torch.Generator().manual_seed(0))
    b = pgd(tiny_cnn, x, y, eps=0.1, step_size=0.02, steps=5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert loss(tiny_cnn(a), y) > loss(tiny_cnn(x), y)


def test_pgd_restores_train_mode(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    tiny_cnn.train()
    seen = []
    tiny_cnn.register_forward_pre_hook(lambda m, inp: seen.append(m.training))
    pgd(tiny_cnn, x, y, eps=0.1, step_size=0.02, steps=2)
    assert tiny_cnn.training and seen and not any(seen)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    eps=st.floats(0.0, 0.5),
    step=st.floats(0.0, 0.3),
    steps=st.integers(0, 4),
    norm=st.sampled_from(["linf", "l2"]),
)
def test_pgd_stays_in_ball_and_range(seed, eps, step, steps, norm):
    model = make_tiny_cnn(seed=seed % 5)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (3,), generator=g)
    adv = pgd(model, x, y, eps=eps, step_size=step, steps=steps, norm=norm, generator=g)
    assert adv.min() >= 0 and adv.max() <= 1
    delta = (adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all()


def test_random_point_and_project():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 5, 5, generator=g)
    for norm in ("linf", "l2"):
        p = random_point(x, 0.2, norm, g)
        d = (p - x).flatten(1)
        assert (d.abs().max(1).values if norm == "linf" else d.norm(dim=1)).max() <= 0.2 + 1e-6
        assert p.min() >= 0 and p.max() <= 1
    far = project(x + 5.0, x, 0.1, "linf")
    assert far.max() <= 1 and ((far - x).abs() <= 0.1 + 1e-7).all()


def test_pgd_loop_callback_sees_every_step(tiny_batch):
    x, _ = tiny_batch
    seen = []
    pgd_loop(lambda z: z.flatten(1).sum(1), x, eps=0.1, step_size=0.05, steps=3, callback=lambda t, z: seen.append(t))
    assert seen == [1, 2, 3]


def _correct(model, x, y):
    with torch.no_grad():
        pred = model(x).argmax(1)
    return x, pred  # attack the model's own predictions: every clean input is correctly "labelled"


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), eps=st.floats(0.01, 0.3), steps=st.integers(1, 3))
def test_ifia_invariants(seed, eps, steps):
    model = make_tiny_cnn(seed=seed % 3)
    g = torch.Generator().manual_seed(seed)
    x, y = _correct(model, torch.rand(4, 1, 8, 8, generator=g), None)
    res = ifia(
        model, x, y, k=10, eps=eps, step_size=eps / 2, steps=steps, beta=10.0, ig_steps=4, restarts=2, generator=g
    )
    assert res.x_adv.shape == x.shape
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert ((res.x_adv - x).abs().amax((1, 2, 3)) <= eps + 1e-6).all()
    with torch.no_grad():
        assert (model(res.x_adv).argmax(1) == y).all()  # valid or clean: the label never changes
    assert ((res.step >= 1) == res.valid).all() and (res.step <= steps).all()
    # Reported scores are those of the returned inputs on the original model.
    ig = lambda z: saliency_map(integrated_gradients(model, z, y, steps=4))  # noqa: E731
    a, b = ig(x), ig(res.x_adv)
    torch.testing.assert_close(topk_intersection(a, b, 10), res.topk, atol=1e-6, rtol=0)
    kd = kendall_tau(a, b)
    torch.testing.assert_close(kd[res.valid], res.kendall[res.valid], atol=1e-5, rtol=0)
    assert (res.kendall[~res.valid] == 1).all() and (res.topk[~res.valid] == 1).all()


def test_ifia_batched_equals_one_at_a_time(tiny_cnn):
    x, y = _correct(tiny_cnn, torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(3)), None)
    kw = {"k": 8, "eps": 0.1, "step_size": 0.02, "steps": 3, "beta": 10.0, "ig_steps": 5}
    full = ifia(tiny_cnn, x, y, **kw)
    for i in range(3):
        one = ifia(tiny_cnn, x[i : i + 1], y[i : i + 1], **kw)
        torch.testing.assert_close(one.x_adv, full.x_adv[i : i + 1], atol=1e-6, rtol=0)
        torch.testing.assert_close(one.kendall, full.kendall[i : i + 1], atol=1e-6, rtol=0)
        assert int(one.step) == int(full.step[i])


def test_ifia_selects_lowest_kendall_among_steps(tiny_cnn):
    x, y = _correct(tiny_cnn, torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(7)), None)
    kw = {"k": 8, "eps": 0.2, "step_size": 0.05, "beta": 10.0, "ig_steps": 4}
    long = ifia(tiny_cnn, x, y, steps=6, **kw)
    short = ifia(tiny_cnn, x, y, steps=3, **kw)
    # Steps 1..3 are shared, so the longer run's choice can only be as good or better.
    assert (long.kendall <= short.kendall + 1e-6).all()
    assert (long.kendall < 1).any()


def test_ifia_with_saliency_attribution(tiny_cnn):
    x, y = _correct(tiny_cnn, torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(8)), None)
    res = ifia(tiny_cnn, x, y, attribution="saliency", k=8, eps=0.1, step_size=0.02, steps=2, beta=10.0)
    assert res.topk.shape == (3,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": None}, "beta"),
        ({"k": 65}, "[1, 64]"),
        ({"k": 0}, "[1, 64]"),
        ({"restarts": 0}, "restarts"),
        ({"select_by": "spearman"}, "select_by"),
        ({"dissimilarity": "center"}, "dissimilarity"),
        ({"attribution": "lime"}, "attribution"),
        ({"eps": -0.1}, "eps"),
        ({"eval_k": 0}, "eval_k"),
        ({"eval_k": 65}, "eval_k"),
        ({"restart_from": "start"}, "restart_from"),
    ],
)
def test_ifia_bad_input(tiny_cnn, kwargs, message):
    x = torch.rand(2, 1, 8, 8)
    y = torch.tensor([0, 1])
    args = {"k": 8, "eps": 0.1, "step_size": 0.01, "steps": 1, "beta": 10.0, **kwargs}
    with pytest.raises(ValueError, match="expected") as info:
        ifia(tiny_cnn, x, y, **args)
    assert message in str(info.value)


def test_attack_registry_lists_names():
    assert {"pgd", "fgsm", "ifia"} <= set(ATTACKS.names())
    with pytest.raises(ValueError, match="pgd"):
        ATTACKS.get("deepfool")


def test_ifia_mass_center_moves_the_centre_of_mass(tiny_cnn):
    from attrobust.attacks.attribution import _centre

    x, y = _correct(tiny_cnn, torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(9)), None)
    kw = {"k": 8, "eps": 0.2, "step_size": 0.05, "steps": 4, "beta": 10.0, "ig_steps": 4}
    res = ifia(tiny_cnn, x, y, dissimilarity="mass_center", select_by="kendall", **kw)

    def centre(z):
        return _centre(saliency_map(integrated_gradients(tiny_cnn, z, y, steps=4)), 8)

    shift = (centre(res.x_adv) - centre(x)).norm(dim=1)
    assert (shift[res.valid] > 0).all() and res.valid.any()
    assert ((res.x_adv - x).abs().amax((1, 2, 3)) <= 0.2 + 1e-6).all()


def test_centre_of_mass_of_a_point_map():
    from attrobust.attacks.attribution import _centre

    m = torch.zeros(2, 12)
    m[0, 7] = 3.0  # row 1, column 3 of a 4-wide map
    m[1, [0, 11]] = 1.0  # corners (0, 0) and (2, 3): centre (1, 1.5)
    torch.testing.assert_close(_centre(m, 4), torch.tensor([[1.0, 3.0], [1.0, 1.5]]))


def test_ifia_random_needs_no_beta_and_is_seeded(tiny_cnn):
    x, y = _correct(tiny_cnn, torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(10)), None)
    kw = {"k": 8, "eps": 0.1, "step_size": 0.05, "steps": 3, "dissimilarity": "random"}
    a = ifia(tiny_cnn, x, y, generator=torch.Generator().manual_seed(0), **kw)
    b = ifia(tiny_cnn, x, y, generator=torch.Generator().manual_seed(0), **kw)
    c = ifia(tiny_cnn, x, y, generator=torch.Generator().manual_seed(1), **kw)
    torch.testing.assert_close(a.x_adv, b.x_adv, atol=0, rtol=0)
    assert not torch.equal(a.x_adv[a.valid], c.x_adv[a.valid]) or not a.valid.any()
    delta = (a.x_adv - x)[a.valid]
    # Random sign steps of 0.05 (twice reaching the 0.1 bound) leave every pixel off the clean value.
    assert (delta.abs() > 0).float().mean() > 0.5


def test_ifia_with_smoothgrad_attribution(tiny_cnn):
    x, y = _correct(tiny_cnn, torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(13)), None)
    opts = {"n": 4, "generator": torch.Generator().manual_seed(0)}
    res = ifia(
        tiny_cnn, x, y, attribution="smoothgrad", attribution_options=opts, k=8, eps=0.1, step_size=0.05, steps=2,
        beta=10.0,
    )  # fmt: skip
    assert res.topk.shape == (3,) and ((res.x_adv - x).abs().amax((1, 2, 3)) <= 0.1 + 1e-6).all()
    with torch.no_grad():
        assert (tiny_cnn(res.x_adv).argmax(1) == y).all()


_RESTART_KW = {"k": 8, "eps": 0.2, "step_size": 0.05, "steps": 3, "beta": 10.0, "ig_steps": 4}


def _same(a, b):
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("x_adv", "topk", "kendall", "valid", "step"))


def test_ifia_eval_k_default_is_the_attack_k_bit_for_bit(tiny_cnn):
    x, y = _correct(tiny_cnn, torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(21)), None)
    for select_by in ("kendall", "topk"):
        kw = {**_RESTART_KW, "restarts": 2, "select_by": select_by}
        today = ifia(tiny_cnn, x, y, generator=torch.Generator().manual_seed(0), **kw)
        same_k = ifia(tiny_cnn, x, y, generator=torch.Generator().manual_seed(0), eval_k=8, **kw)
        assert _same(today, same_k) and torch.equal(today.restart, same_k.restart)


def test_ifia_eval_k_reports_the_smaller_intersection_of_the_returned_maps(tiny_cnn):
    # RAR (paper 001, appendix C.1.1 and Figure 3): attack with k = 200, report the top-100 intersection.
    x, y = _correct(tiny_cnn, torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(22)), None)
    for select_by in ("kendall", "topk"):
        kw = {**_RESTART_KW, "k": 20, "select_by": select_by}
        res = ifia(tiny_cnn, x, y, eval_k=10, **kw)
        ig = lambda z: saliency_map(integrated_gradients(tiny_cnn, z, y, steps=4))  # noqa: E731
        a, b = ig(x), ig(res.x_adv)
        torch.testing.assert_close(res.topk, topk_intersection(a, b, 10), atol=1e-6, rtol=0)
        # The attack itself (objective and, as in the reference code, the top-k selection) is unchanged.
        attack_k = ifia(tiny_cnn, x, y, **kw)
        assert torch.equal(res.x_adv, attack_k.x_adv) and torch.equal(res.kendall, attack_k.kendall)


def test_ifia_clean_restarts_repeat_the_first_run_on_a_deterministic_model(tiny_cnn):
    # RAR runs IFIA three times from the clean image; on a deterministic CPU the runs are identical.
    x, y = _correct(tiny_cnn, torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(23)), None)
    once = ifia(tiny_cnn, x, y, restarts=1, restart_from="clean", **_RESTART_KW)
    thrice = ifia(tiny_cnn, x, y, restarts=3, restart_from="clean", **_RESTART_KW)
    assert _same(once, thrice) and (thrice.restart[thrice.valid] == 0).all()


def test_ifia_random_restarts_are_todays_default(tiny_cnn):
    x, y = _correct(tiny_cnn, torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(24)), None)
    kw = {**_RESTART_KW, "restarts": 3}
    today = ifia(tiny_cnn, x, y, generator=torch.Generator().manual_seed(5), **kw)
    rand = ifia(tiny_cnn, x, y, generator=torch.Generator().manual_seed(5), restart_from="random", **kw)
    assert _same(today, rand) and torch.equal(today.restart, rand.restart)


def test_ifia_topk_from_a_sparse_map_is_flat_and_says_so(tiny_cnn, monkeypatch):
    # a thin digit: at most k lit pixels, so IG (black baseline) has at most k non-zero pixels and the normalised
    # top-k mass is already 1; its gradient is 0 up to rounding, and the attack's progress is rounding noise
    from attrobust import _checks
    from attrobust.attacks import ifia_flat_start
    from attrobust.attacks.attribution import _dissimilarity
    from attrobust.attributions import explainer
    from attrobust.models import softplus

    monkeypatch.setattr(_checks, "_WARNED", set())
    g = torch.Generator().manual_seed(4)
    sparse = torch.zeros(1, 1, 8, 8)
    sparse.view(-1)[torch.randperm(64, generator=g)[:6]] = 0.5 + 0.4 * torch.rand(6, generator=g)
    x = torch.cat([sparse, 0.1 + 0.8 * torch.rand(1, 1, 8, 8, generator=g)])
    y = tiny_cnn(x).argmax(1)
    kw = {"k": 8, "beta": 10.0, "ig_steps": 5}
    assert ifia_flat_start(tiny_cnn, x, y, k=8, ig_steps=5).tolist() == [True, False]
    attr, surrogate = explainer("ig", ig_steps=5), softplus(tiny_cnn, 10.0)
    clean = saliency_map(attr(tiny_cnn, x, y))
    objective = _dissimilarity("topk", attr, surrogate, y, clean, clean.topk(8, dim=1).indices, 8, None)
    x_req = x.clone().requires_grad_(True)
    value = objective(x_req)
    flat, dense = value.detach().tolist()
    (grad,) = torch.autograd.grad(value.sum(), x_req)
    assert flat == pytest.approx(-1.0) and dense > -1.0
    assert grad[0].abs().max() <= 1e-6 * grad[1].abs().max()
    with pytest.warns(RuntimeWarning, match="IFIA top-k from the clean image"):
        assert ifia(tiny_cnn, x, y, eps=0.1, step_size=0.02, steps=2, **kw).flat_start.tolist() == [True, False]
    monkeypatch.setattr(_checks, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match="IFIA top-k from the clean image"):  # every run from the clean image
        clean_runs = ifia(tiny_cnn, x, y, eps=0.1, step_size=0.02, steps=2, restarts=2, restart_from="clean", **kw)
    assert clean_runs.flat_start.tolist() == [True, False]
    monkeypatch.setattr(_checks, "_WARNED", set())
    step = {"eps": 0.1, "step_size": 0.02, "steps": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a random start leaves the flat point: no warning
        for res in (
            ifia(tiny_cnn, x, y, **step, random_start=True, generator=g, **kw),
            ifia(tiny_cnn, x, y, **step, restarts=2, generator=g, **kw),  # the second run starts randomly
            ifia(tiny_cnn, x, y, **step, dissimilarity="mass_center", **kw),  # another objective
            ifia(tiny_cnn, x[1:], y[1:], **step, **kw),  # a dense map
        ):
            assert not res.flat_start.any() and res.flat_start.shape == (len(res),)
