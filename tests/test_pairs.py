"""gkl.kl for every pair of Gaussian forms (diag-diag, full-full, full-diag,
diag-full, vs N(0, I)), the containers, torch.distributions interop,
GaussianKLLoss, the mixed op (reference, td, gradcheck, opcheck, compile,
errors) and double backward."""

import pytest
import torch
import torch.distributions as td

import gaussian_kl_cuda as gkl
from _reference import PARAMS, kl_full_ref, rand_spd, random_loc, random_scale, to_var

FULL = ("scale_tril", "cov")


def make_side(kind, batch, D, gen, dtype=torch.float64, device="cpu"):
    """(container, dense float64 covariance) for kind in PARAMS + FULL."""
    loc = random_loc(batch + (D,), gen)
    if kind in FULL:
        S = rand_spd(batch, D, gen)
        m = torch.linalg.cholesky(S) if kind == "scale_tril" else S
        g = gkl.FullGaussian(loc.to(device, dtype), **{kind: m.to(device, dtype)})
    else:
        s = random_scale(batch + (D,), kind, gen)
        S = torch.diag_embed(to_var(s, kind))
        g = gkl.DiagGaussian(loc.to(device, dtype), **{kind: s.to(device, dtype)})
    return g, loc, S


def dense_ref(p, q):
    """float64 reference from (container, loc, dense cov) triples."""
    _, lp, Sp = p
    if q is None:
        return kl_full_ref(lp, Sp)
    _, lq, Sq = q
    lp, lq = torch.broadcast_tensors(lp, lq)
    Sp, Sq = torch.broadcast_tensors(Sp, Sq)
    return kl_full_ref(lp, Sp, lq, Sq)


PAIRS = (
    [(a, b) for a in PARAMS for b in PARAMS]
    + [(a, b) for a in FULL for b in FULL]
    + [(a, b) for a in FULL for b in PARAMS]
    + [(a, b) for a in PARAMS for b in FULL]
)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("pk,qk", PAIRS)
@pytest.mark.parametrize("qshape", ["rows", "shared"])
def test_every_pair_matches_reference_and_td(device, dtype, pk, qk, qshape, gen):
    B, D = 5, 6
    p = make_side(pk, (B,), D, gen, dtype, device)
    q = make_side(qk, (B,) if qshape == "rows" else (), D, gen, dtype, device)
    out = gkl.kl(p[0], q[0])
    assert out.shape == (B,) and out.dtype == dtype and out.device.type == device
    ref = dense_ref(p, q)
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-5)
    torch.testing.assert_close(out.cpu().double(), ref, **tol)
    # torch.distributions on the densified pair.
    lp, lq = p[1], q[1].expand_as(p[1])
    t = td.kl_divergence(td.MultivariateNormal(lp, p[2]), td.MultivariateNormal(lq, q[2].expand_as(p[2])))
    torch.testing.assert_close(out.cpu().double(), t, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("pk", PARAMS + FULL)
def test_against_standard_normal(device, pk, gen):
    p = make_side(pk, (3, 2), 5, gen, device=device)
    out = gkl.kl(p[0])
    assert out.shape == (3, 2)
    torch.testing.assert_close(out.cpu(), dense_ref(p, None), rtol=1e-9, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("pk,qk", [(a, b) for a in FULL for b in PARAMS] + [(a, b) for a in PARAMS for b in FULL]
                         + [("scale_tril", "cov"), ("cov", "scale_tril"), ("logvar", "std"),
                            ("var", "logstd"), ("scale_tril", "scale_tril"), ("cov", "cov")])
@pytest.mark.parametrize("D", [1, 2, 3, 8])
def test_every_pair_gradcheck(pk, qk, D, gen):
    B = 3
    p = make_side(pk, (B,), D, gen)
    q = make_side(qk, (B,), D, gen)

    def prep(side):
        g = side[0]
        loc = g.loc.clone().requires_grad_()
        sc = g.scale.clone().requires_grad_()
        return loc, sc, g.param

    lp, sp, pp = prep(p)
    lq, sq, qp = prep(q)

    def f(lp, sp, lq, sq):
        # scale_tril through .tril() (the upper triangle is not read);
        # cov symmetrised (the op reads the lower triangle as symmetric).
        def mk(loc, s, param):
            if param == "scale_tril":
                return gkl.FullGaussian(loc, scale_tril=s.tril())
            if param == "cov":
                return gkl.FullGaussian(loc, cov=0.5 * (s + s.transpose(-1, -2)))
            return gkl.DiagGaussian(loc, **{param: s})

        return gkl.kl(mk(lp, sp, pp), mk(lq, sq, qp))

    assert torch.autograd.gradcheck(f, (lp, sp, lq, sq))


@pytest.mark.parametrize("pk,qk", [("cov", "var"), ("logvar", "cov"), ("cov", "scale_tril"), ("scale_tril", "cov"),
                                   ("std", "scale_tril")])
@pytest.mark.parametrize("D", [5, 40])  # 40: the register-tiled per-row solves and products
def test_mixed_cov_grads_match_torch(pk, qk, D, gen):
    """Covariance gradients equal torch's (symmetric part), others equal."""
    B = 4
    p = make_side(pk, (B,), D, gen)
    q = make_side(qk, (B,), D, gen)
    leaves = [t.clone().requires_grad_() for t in (p[0].loc, p[0].scale, q[0].loc, q[0].scale)]

    def mk(loc, s, param):
        if param in FULL:
            return gkl.FullGaussian(loc, **{param: s})
        return gkl.DiagGaussian(loc, **{param: s})

    gkl.kl(mk(leaves[0], leaves[1], pk), mk(leaves[2], leaves[3], qk)).sum().backward()
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]

    def dense(loc, s, param):
        if param == "scale_tril":
            return td.MultivariateNormal(loc, scale_tril=s)
        if param == "cov":
            return td.MultivariateNormal(loc, covariance_matrix=s)
        return td.MultivariateNormal(loc, covariance_matrix=torch.diag_embed(
            {"std": lambda: s * s, "var": lambda: s, "logvar": lambda: s.exp(),
             "logstd": lambda: (2 * s).exp()}[param]()))

    td.kl_divergence(dense(ref_leaves[0], ref_leaves[1], pk), dense(ref_leaves[2], ref_leaves[3], qk)).sum().backward()
    for ours, theirs, kind in zip(leaves, ref_leaves, [None, pk, None, qk]):
        g = theirs.grad
        if kind == "cov":
            g = 0.5 * (g + g.transpose(-1, -2))
            torch.testing.assert_close(ours.grad, ours.grad.transpose(-1, -2))
        if kind == "scale_tril":
            g = g.tril()
        torch.testing.assert_close(ours.grad, g, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("qk", PARAMS)
@pytest.mark.parametrize("pk", FULL)
def test_full_diag_near_equal_float32(device, pk, qk, gen):
    """Full p close to a diagonal q: float32 within 1e-2 of float64 on the
    same float32 inputs at KL ~ 1e-8, never negative."""
    B, D = 64, 8
    s = random_scale((B, D), qk, gen)
    sd = to_var(s, qk).sqrt()
    eps = 1e-5
    L = torch.diag_embed(sd) * (1 + eps * torch.randn(B, D, D, generator=gen, dtype=torch.float64)).tril()
    L = L + eps * torch.randn(B, D, D, generator=gen, dtype=torch.float64).tril(-1) * sd.unsqueeze(-1)
    loc = random_loc((B, D), gen)
    locp = loc + eps * sd * torch.randn(B, D, generator=gen, dtype=torch.float64)
    m = L if pk == "scale_tril" else L @ L.transpose(-1, -2)
    f32 = [t.float() for t in (locp, m, loc, s)]
    out = gkl.kl(gkl.FullGaussian(f32[0].to(device), **{pk: f32[1].to(device)}),
                 gkl.DiagGaussian(f32[2].to(device), **{qk: f32[3].to(device)})).cpu()
    # float64 reference on the same (float32-rounded) inputs.
    x = [t.double() for t in f32]
    Sp = x[1] @ x[1].transpose(-1, -2) if pk == "scale_tril" else x[1]
    Lp = torch.linalg.cholesky(Sp)
    sdq = to_var(x[3], qk).sqrt()
    A = Lp / sdq.unsqueeze(-1)
    dg = torch.diagonal(A, dim1=-2, dim2=-1)
    ld = 2 * torch.log(dg)
    ref = 0.5 * ((A.tril(-1) ** 2).sum((-1, -2)) + (torch.expm1(ld) - ld).sum(-1)
                 + (((x[2] - x[0]) / sdq) ** 2).sum(-1))
    assert (out >= 0).all()
    assert ref.max() < 1e-6
    if pk == "scale_tril":  # cov: the float32 Cholesky itself perturbs KL at this level
        torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=0)


# ------------------------------------------------------------- containers
def test_containers_check_and_describe(gen):
    mu = torch.randn(4, 3, generator=gen)
    g = gkl.DiagGaussian(mu, logvar=torch.zeros(3))
    assert g.batch_shape == (4,) and g.event_size == 3 and g.param == "logvar"
    assert "DiagGaussian(batch_shape=(4,), event_size=3, param='logvar'" in repr(g)
    h = g.to(torch.float64)
    assert h.loc.dtype == torch.float64 and h.scale.dtype == torch.float64 and h.param == "logvar"
    f = gkl.FullGaussian(mu, scale_tril=torch.eye(3).expand(2, 1, 3, 3))
    assert f.batch_shape == (2, 4) and f.event_size == 3
    assert "FullGaussian(batch_shape=(2, 4), event_size=3, param='scale_tril'" in repr(f)
    with pytest.raises(ValueError, match="exactly one of std, var, logvar, logstd.*got std, var"):
        gkl.DiagGaussian(mu, std=mu.exp(), var=mu.exp())
    with pytest.raises(ValueError, match="exactly one of scale_tril, cov.*got none"):
        gkl.FullGaussian(mu)
    with pytest.raises(ValueError, match="for a diagonal covariance use kl_diag"):
        gkl.FullGaussian(mu, cov=mu.exp())
    with pytest.raises(ValueError, match=r"std must have shape \[\*batch, D\].*got \(4,\) with loc \(4, 3\)"):
        gkl.DiagGaussian(mu, std=torch.ones(4))
    with pytest.raises(ValueError, match="do not broadcast"):
        gkl.DiagGaussian(mu, std=torch.ones(5, 3))
    with pytest.raises(TypeError, match="floating"):
        gkl.DiagGaussian(mu, std=torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError):
        gkl.DiagGaussian(mu, torch.ones(3))  # the param is keyword-only


def td_pair(gen, B=4, D=3):
    """(loc, std, Independent(Normal, 1), MultivariateNormal) in float64."""
    loc = torch.randn(B, D, generator=gen, dtype=torch.float64)
    std = torch.rand(B, D, generator=gen, dtype=torch.float64) + 0.5
    ind = td.Independent(td.Normal(loc, std), 1)
    mvn = td.MultivariateNormal(loc.flip(0), covariance_matrix=rand_spd((B,), D, gen))
    return loc, std, ind, mvn


def test_torch_distributions_as_inputs_and_normal_error(gen):
    B, D = 4, 3
    loc, std, ind, mvn = td_pair(gen, B, D)
    for p, q in [(ind, mvn), (mvn, ind), (mvn, mvn.expand((B,))), (ind, None), (mvn, None)]:
        ours = gkl.kl(p, q)
        qq = q if q is not None else td.MultivariateNormal(torch.zeros(D, dtype=torch.float64),
                                                          torch.eye(D, dtype=torch.float64))
        dense = lambda d: d if isinstance(d, td.MultivariateNormal) else td.MultivariateNormal(
            d.mean, torch.diag_embed(d.variance))
        torch.testing.assert_close(ours, td.kl_divergence(dense(p), dense(qq)))
    with pytest.raises(TypeError, match="per dimension.*Independent\\(Normal\\(loc, scale\\), 1\\)"):
        gkl.kl(td.Normal(loc, std))
    with pytest.raises(TypeError, match="Independent\\(Normal, 2\\)"):
        gkl.kl(td.Independent(td.Normal(loc, std), 2))
    with pytest.raises(TypeError, match="got Tensor"):
        gkl.kl(loc)
    with pytest.raises(TypeError, match="q must be.*or None"):
        gkl.kl(ind, td.Laplace(loc, std))


def test_gradients_flow_to_every_tensor_of_every_form(gen):
    D = 4
    t = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_()
    loc_a, lv_a, loc_b = t(3, D), t(3, D), t(D)
    A = rand_spd((), D, gen).requires_grad_()
    ind_loc, ind_logstd = t(3, D), t(3, D)
    p = gkl.DiagGaussian(loc_a, logvar=lv_a)
    q = gkl.FullGaussian(loc_b, cov=A)
    r = td.Independent(td.Normal(ind_loc, ind_logstd.exp()), 1)
    (gkl.kl(p, q).sum() + gkl.kl(q, r).sum() + gkl.kl(r, p).sum()).backward()
    for x in (loc_a, lv_a, loc_b, A, ind_loc, ind_logstd):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_loss_module(gen):
    loss = gkl.GaussianKLLoss()
    assert "reduction='mean'" in repr(loss)
    mu = torch.randn(8, 4, generator=gen)
    lv = torch.randn(8, 4, generator=gen)
    p = gkl.DiagGaussian(mu, logvar=lv)
    torch.testing.assert_close(loss(p), gkl.kl_diag(mu, lv, param="logvar").mean())
    q = gkl.FullGaussian(torch.zeros(4), scale_tril=2 * torch.eye(4))
    torch.testing.assert_close(gkl.GaussianKLLoss("sum")(p, q), gkl.kl(p, q).sum())
    with pytest.raises(ValueError, match="reduction"):
        gkl.GaussianKLLoss("avg")


# ----------------------------------------------------------- the mixed op
def test_mixed_opcheck(gen):
    B, D = 3, 4
    mu_p, mu_q = torch.randn(B, D, generator=gen), torch.randn(B, D, generator=gen)
    L = torch.linalg.cholesky(rand_spd((B,), D, gen).float())
    v = torch.rand(B, D, generator=gen) + 0.5
    for args in [(mu_p, L, mu_q, v, "scale_tril", "var"), (mu_p, v, mu_q, L, "std", "scale_tril"),
                 (mu_p, L, mu_q, L @ L.mT, "scale_tril", "cov")]:
        a = [x.clone().requires_grad_() if isinstance(x, torch.Tensor) else x for x in args]
        torch.library.opcheck(torch.ops.gaussian_kl.kl_mixed, (*a, True))
        g = torch.rand(B, generator=gen)
        torch.library.opcheck(torch.ops.gaussian_kl.kl_mixed_backward,
                              (g, *args, [True, True, True, True]))
        torch.library.opcheck(torch.ops.gaussian_kl.kl_mixed_backward,
                              (g, *args, [False, True, False, False]))


def test_kl_with_containers_compiles_fullgraph(gen):
    B, D = 6, 4
    mu = torch.randn(B, D, generator=gen, requires_grad=True)
    lv = torch.randn(B, D, generator=gen, requires_grad=True)
    L = torch.linalg.cholesky(rand_spd((), D, gen).float()).requires_grad_()

    def f(mu, lv, L):
        p = gkl.DiagGaussian(mu, logvar=lv)
        q = gkl.FullGaussian(torch.zeros(D), scale_tril=L)
        return gkl.kl(p, q, reduction="sum") + gkl.kl(q, p).sum() + gkl.kl(p).sum()

    eager = f(mu, lv, L)
    ge = torch.autograd.grad(eager, (mu, lv, L))
    compiled = torch.compile(f, fullgraph=True)(mu, lv, L)
    gc = torch.autograd.grad(compiled, (mu, lv, L))
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b)


def test_mixed_errors_and_isolation(device, gen):
    B, D = 5, 3
    mu = torch.randn(B, D, generator=gen, dtype=torch.float64, device=device)
    L = torch.eye(D, dtype=torch.float64, device=device).repeat(B, 1, 1)
    v = torch.rand(B, D, generator=gen, dtype=torch.float64, device=device) + 0.5
    v_bad = v.clone()
    v_bad[3, 1] = -1.0
    with pytest.raises(ValueError, match=r"m_q \(param='var'\) must be positive.*batch index \(3,\)"):
        gkl.kl(gkl.FullGaussian(mu, scale_tril=L), gkl.DiagGaussian(mu, var=v_bad))
    out = gkl.kl(gkl.FullGaussian(mu, scale_tril=L), gkl.DiagGaussian(mu, var=v_bad), check=False)
    good = gkl.kl(gkl.FullGaussian(mu, scale_tril=L), gkl.DiagGaussian(mu, var=v))
    assert torch.isnan(out[3]) and torch.equal(out[[0, 1, 2, 4]], good[[0, 1, 2, 4]])
    C = torch.eye(D, dtype=torch.float64, device=device).repeat(B, 1, 1)
    C[2, 0, 0] = -1.0
    with pytest.raises(ValueError, match=r"m_q \(param='cov'\) is not positive definite.*\(2,\)"):
        gkl.kl(gkl.DiagGaussian(mu, std=v), gkl.FullGaussian(mu, cov=C))
    mu_nan = mu.clone()
    mu_nan[4, 0] = float("nan")
    with pytest.raises(ValueError, match=r"mu_p has a non-finite value.*\(4,\)"):
        gkl.kl(gkl.DiagGaussian(mu_nan, std=v), gkl.FullGaussian(mu, scale_tril=L))
    with pytest.raises(ValueError, match="event sizes"):
        gkl.kl(gkl.DiagGaussian(mu, std=v), gkl.FullGaussian(mu[:, :2], scale_tril=L[:, :2, :2]))
    with pytest.raises(ValueError, match="both sides are diagonal"):
        gkl.kl_mixed(mu, v, mu, v, p_param="std", q_param="var")
    with pytest.raises(ValueError, match="q_param must be one of"):
        gkl.kl_mixed(mu, v, mu, L, p_param="std", q_param="sigma")


# ------------------------------------------------------------ double backward
@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("q", ["full", "shared", "prior"])
def test_diag_gradgradcheck(param, q, gen):
    B, D = 3, 4
    mu_p = random_loc((B, D), gen).requires_grad_()
    s_p = random_scale((B, D), param, gen).requires_grad_()
    args = [mu_p, s_p]
    if q != "prior":
        shape = (B, D) if q == "full" else (D,)
        args += [random_loc(shape, gen).requires_grad_(), random_scale(shape, param, gen).requires_grad_()]
    f = lambda *a: gkl.kl_diag(*a, param=param)
    assert torch.autograd.gradgradcheck(f, tuple(args))


def test_diag_hessian_vector_product_matches_torch(gen):
    """TRPO-style: Hessian-vector product of the mean KL of a policy with a
    shared state-independent log-std, against torch.distributions."""
    B, D = 16, 5
    mu = torch.randn(B, D, generator=gen, dtype=torch.float64)
    W = torch.randn(D, D, generator=gen, dtype=torch.float64, requires_grad=True)
    logstd = torch.randn(D, generator=gen, dtype=torch.float64, requires_grad=True)
    old_mu, old_logstd = (mu @ W).detach(), logstd.detach()
    vec = [torch.randn_like(W), torch.randn_like(logstd)]

    def hvp(kl_fn):
        kl = kl_fn(mu @ W, logstd)
        grads = torch.autograd.grad(kl, (W, logstd), create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vec))
        return torch.autograd.grad(dot, (W, logstd))

    ours = hvp(lambda m, ls: gkl.kl(gkl.DiagGaussian(old_mu, logstd=old_logstd),
                                    gkl.DiagGaussian(m, logstd=ls), reduction="mean"))
    theirs = hvp(lambda m, ls: td.kl_divergence(
        td.Independent(td.Normal(old_mu, old_logstd.exp()), 1),
        td.Independent(td.Normal(m, ls.exp()), 1)).mean())
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
        assert a.abs().sum() > 0


# ---------------------------------------------------- register_with_torch
def test_register_with_torch_round_trip(gen):
    B = 4
    loc, std, ind, mvn = td_pair(gen, B)
    before = {k: v for k, v in td.kl._KL_REGISTRY.items()}
    expected_mvn = td.kl_divergence(mvn, mvn.expand((B,)))
    with pytest.raises(NotImplementedError):
        td.kl_divergence(mvn, ind)  # torch lacks the mixed pairs
    ind2 = td.Independent(td.Normal(loc.unsqueeze(0), std.unsqueeze(0)), 2)
    expected_ind2 = td.kl_divergence(ind2, ind2)
    try:
        gkl.register_with_torch()
        gkl.register_with_torch()  # idempotent
        assert gkl.is_registered()
        torch.testing.assert_close(td.kl_divergence(mvn, mvn.expand((B,))), expected_mvn)
        torch.testing.assert_close(td.kl_divergence(mvn, ind), gkl.kl(mvn, ind))
        torch.testing.assert_close(td.kl_divergence(ind, mvn), gkl.kl(ind, mvn))
        torch.testing.assert_close(td.kl_divergence(ind, ind), torch.zeros(B, dtype=torch.float64))
        # Not covered (Independent over 2 dims): torch's own implementation.
        torch.testing.assert_close(td.kl_divergence(ind2, ind2), expected_ind2)
        fn = td.kl._dispatch_kl(td.MultivariateNormal, td.Independent)
        assert fn.__name__.startswith("_gkl_kl_")
    finally:
        gkl.unregister_from_torch()
    assert not gkl.is_registered()
    assert td.kl._KL_REGISTRY == before
    with pytest.raises(NotImplementedError):
        td.kl_divergence(mvn, ind)
