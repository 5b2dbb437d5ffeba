"""kl_full against a float64 inverse/slogdet reference, td.MultivariateNormal,
gradcheck, torch's own cov gradients, opcheck, torch.compile, conditioning,
the numerics near p == q, low precision and every error case."""

import pytest
import torch
import torch.distributions as td

import gaussian_kl_cuda as gkl
from _reference import kl_full_ref, rand_spd


def rand_mu(shape, D, gen, dtype=torch.float64):
    return torch.randn(*shape, D, generator=gen, dtype=torch.float64).to(dtype)


def inputs(param, shape, D, gen, dtype=torch.float64, device="cpu", cond=None):
    mu = rand_mu(shape, D, gen)
    S = rand_spd(shape, D, gen, cond)
    m = torch.linalg.cholesky(S) if param == "scale_tril" else S
    return mu.to(device, dtype), m.to(device, dtype), S


@pytest.mark.parametrize("param", ["scale_tril", "cov"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("D", [1, 2, 3, 4, 5, 8, 16, 32, 33, 64, 256])
@pytest.mark.parametrize("q", ["full", "shared", "prior"])
def test_matches_reference_and_td(device, param, dtype, D, q, gen):
    B = 6
    mu_p, m_p, S_p = inputs(param, (B,), D, gen, dtype, device)
    if q == "prior":
        out = gkl.kl_full(mu_p, m_p, param=param)
        ref = kl_full_ref(mu_p.cpu(), S_p)
        tdq = td.MultivariateNormal(torch.zeros(D, dtype=torch.float64), torch.eye(D, dtype=torch.float64))
    else:
        qshape = (B,) if q == "full" else ()
        mu_q, m_q, S_q = inputs(param, qshape, D, gen, dtype, device)
        out = gkl.kl_full(mu_p, m_p, mu_q, m_q, param=param)
        ref = kl_full_ref(mu_p.cpu(), S_p, mu_q.cpu(), S_q)
        tdq = td.MultivariateNormal(mu_q.cpu().double(), covariance_matrix=S_q)
    assert out.shape == (B,) and out.dtype == dtype
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.cpu().double(), ref, **tol)
    if dtype == torch.float64:
        tdp = td.MultivariateNormal(mu_p.cpu(), covariance_matrix=S_p)
        torch.testing.assert_close(out.cpu(), td.kl_divergence(tdp, tdq), rtol=1e-10, atol=1e-10)


def test_batch_shapes_broadcast_and_empty(device, gen):
    D = 4
    mu_p, L_p, S_p = inputs("scale_tril", (2, 3), D, gen, device=device)
    mu_q, L_q, S_q = inputs("scale_tril", (3,), D, gen, device=device)
    out = gkl.kl_full(mu_p, L_p, mu_q, L_q, param="scale_tril")
    assert out.shape == (2, 3)
    torch.testing.assert_close(out.cpu(), kl_full_ref(mu_p.cpu(), S_p, mu_q.cpu().expand(2, 3, D), S_q.expand(2, 3, D, D)))
    # A single shared q for the whole batch and a shared mean only.
    out = gkl.kl_full(mu_p, L_p, mu_q[0], L_q[0], param="scale_tril", reduction="sum")
    torch.testing.assert_close(out.cpu(), kl_full_ref(mu_p.cpu(), S_p, mu_q[0].cpu().expand(2, 3, D),
                                                     S_q[0].expand(2, 3, D, D)).sum())
    empty = gkl.kl_full(mu_p[:0], L_p[:0], param="scale_tril")
    assert empty.shape == (0, 3)
    e2 = gkl.kl_full(mu_p[:0], L_p[:0], mu_q, L_q, param="cov")
    assert e2.shape == (0, 3)


@pytest.mark.parametrize("param", ["scale_tril", "cov"])
@pytest.mark.parametrize("q", [True, False])
def test_zero_event_size(device, param, q):
    """D = 0: the KL of two 0-dimensional Gaussians is 0, gradients empty
    (on CUDA the block kernels take D = 0)."""
    ts = [torch.zeros(3, 0, device=device), torch.zeros(3, 0, 0, device=device)]
    ts = [t.requires_grad_() for t in (ts + [t.clone() for t in ts] if q else ts)]
    out = gkl.kl_full(*ts, param=param)
    assert out.shape == (3,) and torch.equal(out.cpu(), torch.zeros(3))
    out.sum().backward()
    assert all(t.grad.shape == t.shape for t in ts)


def test_scale_tril_upper_triangle_ignored_and_noncontiguous(device, gen):
    D = 6
    mu_p, L_p, S_p = inputs("scale_tril", (5,), D, gen, device=device)
    junk = L_p + torch.randn(5, D, D, generator=gen, dtype=torch.float64).to(device).triu(1)
    out = gkl.kl_full(mu_p, junk, param="scale_tril")
    torch.testing.assert_close(out.cpu(), kl_full_ref(mu_p.cpu(), S_p))
    # Non-contiguous: a transposed upper factor viewed as lower, strided means.
    U = L_p.transpose(-1, -2).contiguous()
    mu_wide = torch.stack([mu_p, mu_p], -1)[..., 0]
    out = gkl.kl_full(mu_wide, U.transpose(-1, -2), param="scale_tril")
    torch.testing.assert_close(out.cpu(), kl_full_ref(mu_p.cpu(), S_p))
    # cov: only the lower triangle is read (as a symmetric matrix).
    mu_q, S_q, _ = inputs("cov", (5,), D, gen, device=device)
    S_low = S_q.tril() + 7.0 * torch.ones_like(S_q).triu(1)
    out = gkl.kl_full(mu_p, S_p.to(device), mu_q, S_low, param="cov")
    torch.testing.assert_close(out.cpu(), kl_full_ref(mu_p.cpu(), S_p, mu_q.cpu(), S_q.cpu()))


@pytest.mark.slow
@pytest.mark.parametrize("D", [1, 2, 3, 8])
@pytest.mark.parametrize("q", ["full", "shared", "prior"])
def test_gradcheck_scale_tril(device, D, q, gen):
    mu_p, L_p, _ = inputs("scale_tril", (3,), D, gen, device=device)
    args = [mu_p.requires_grad_(), L_p.requires_grad_()]
    if q != "prior":
        mu_q, L_q, _ = inputs("scale_tril", (3,) if q == "full" else (), D, gen, device=device)
        args += [mu_q.requires_grad_(), L_q.requires_grad_()]

    def fn(*a):
        a = list(a)
        a[1] = a[1].tril()
        if len(a) > 2:
            a[3] = a[3].tril()
        return gkl.kl_full(*a, param="scale_tril")

    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("D", [1, 2, 3, 8])
@pytest.mark.parametrize("q", ["full", "shared", "prior"])
def test_gradcheck_cov(device, D, q, gen):
    mu_p, S_p, _ = inputs("cov", (3,), D, gen, device=device)
    args = [mu_p.requires_grad_(), S_p.requires_grad_()]
    if q != "prior":
        mu_q, S_q, _ = inputs("cov", (3,) if q == "full" else (), D, gen, device=device)
        args += [mu_q.requires_grad_(), S_q.requires_grad_()]

    def fn(*a):
        a = list(a)
        a[1] = 0.5 * (a[1] + a[1].transpose(-1, -2))
        if len(a) > 2:
            a[3] = 0.5 * (a[3] + a[3].transpose(-1, -2))
        return gkl.kl_full(*a, param="cov")

    assert torch.autograd.gradcheck(fn, args)


def _tril_grads_ref(mu_p, L_p, mu_q, L_q, w):
    """float64 autograd through td.MultivariateNormal: KL and the gradients
    of sum(w * KL) (lower triangles for the factors); q None = N(0, I)."""
    ts = [t.detach().cpu().double().requires_grad_() for t in (mu_p, L_p) + ((mu_q, L_q) if mu_q is not None else ())]
    D = ts[0].shape[-1]
    p = td.MultivariateNormal(ts[0], scale_tril=ts[1])
    if mu_q is None:
        q = td.MultivariateNormal(torch.zeros(D, dtype=torch.float64), scale_tril=torch.eye(D, dtype=torch.float64))
    else:
        q = td.MultivariateNormal(ts[2], scale_tril=ts[3])
    kl = td.kl_divergence(p, q)
    (kl * w.cpu().double()).sum().backward()
    return kl.detach(), [t.grad.tril() if i % 2 else t.grad for i, t in enumerate(ts)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("D", [6, 13, 20, 31, 47, 100])
@pytest.mark.parametrize("q", ["full", "shared", "prior"])
@pytest.mark.parametrize("layout", ["row", "col"])
def test_scale_tril_between_specialised_sizes(device, dtype, D, q, layout, gen):
    """D between the specialised sizes, row- and column-major factors (the
    gradient keeps the layout), q per row, shared or N(0, I), forward and every
    gradient against float64 autograd through td. On CUDA these run on
    thread groups of 8, 16 or 32 per row (cuda/plan.h; B = 37 leaves groups
    past the last row) and, from D = 33, on a block per row. bfloat16:
    against the reference on the rounded inputs."""
    B = 37
    tril = lambda t: (t.mT.contiguous().mT if layout == "col" else t).to(device, dtype)
    mu_p, _, S_p = inputs("scale_tril", (B,), D, gen)
    L_p = torch.linalg.cholesky(S_p)
    args = [mu_p.to(device, dtype), tril(L_p)]
    if q != "prior":
        mu_q, _, S_q = inputs("scale_tril", (B,) if q == "full" else (), D, gen)
        args += [mu_q.to(device, dtype), tril(torch.linalg.cholesky(S_q))]
    if layout == "col":
        assert args[1].stride()[-2:] == (1, D)
    w = (torch.rand(B, generator=gen, dtype=torch.float64) + 0.5).to(dtype).double()
    ours = [a.clone().requires_grad_() for a in args]  # clone keeps the strides
    out = gkl.kl_full(*ours, param="scale_tril")
    (out * w.to(device, dtype)).sum().backward()
    rounded = [a.detach().double() for a in args]
    kl, grads = _tril_grads_ref(rounded[0], rounded[1], *(rounded[2:] if q != "prior" else (None, None)), w)
    assert out.dtype == dtype and out.shape == (B,)
    rtol = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(out.detach().cpu().double(), kl, rtol=rtol, atol=rtol)
    gtol = {torch.float64: 1e-9, torch.float32: 2e-3, torch.bfloat16: 3e-2}[dtype]
    if layout == "col":
        assert ours[1].grad.stride()[-2:] == (1, D)
    for i, (a, g) in enumerate(zip(ours, grads)):
        got = a.grad.cpu().double()
        if i % 2:
            assert torch.all(got.triu(1) == 0)
        scale = g.abs().max().item()
        torch.testing.assert_close(got, g, rtol=gtol, atol=gtol * scale)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("D", [6, 13, 20, 47, 100])
@pytest.mark.parametrize("q", ["full", "shared", "prior"])
def test_cov_between_specialised_sizes(device, dtype, D, q, gen):
    """cov between the specialised sizes (on CUDA: factored, solved and
    inverted inside a lane group, or from D = 33 in a block; a shared q is
    factored once by the host): forward against the float64 reference,
    gradients against torch's (symmetric part; ours exactly symmetric); with
    check=False an indefinite row is NaN and every other row is right."""
    B = 37
    mu_p, S_p, _ = inputs("cov", (B,), D, gen, dtype, device)
    args, ref_q = [mu_p, S_p], ()
    if q != "prior":
        mu_q, S_q, _ = inputs("cov", (B,) if q == "full" else (), D, gen, dtype, device)
        args, ref_q = args + [mu_q, S_q], (mu_q.cpu(), S_q.cpu())
    ref = kl_full_ref(mu_p.cpu(), S_p.cpu(), *ref_q)
    tol = 1e-9 if dtype == torch.float64 else 2e-4
    ours = [a.clone().requires_grad_() for a in args]
    out = gkl.kl_full(*ours, param="cov")
    torch.testing.assert_close(out.detach().cpu().double(), ref, rtol=tol, atol=tol)
    # Gradients: torch's (autograd through td, float64), symmetric part.
    w = (torch.rand(B, generator=gen, dtype=torch.float64) + 0.5).to(dtype)
    (out * w.to(device)).sum().backward()
    theirs = [a.detach().cpu().double().requires_grad_() for a in args]
    tq = (td.MultivariateNormal(theirs[2], covariance_matrix=theirs[3]) if q != "prior" else
          td.MultivariateNormal(torch.zeros(D, dtype=torch.float64), torch.eye(D, dtype=torch.float64)))
    (td.kl_divergence(td.MultivariateNormal(theirs[0], covariance_matrix=theirs[1]), tq) * w.double()).sum().backward()
    gtol = 1e-8 if dtype == torch.float64 else 2e-3
    for i, (a, b) in enumerate(zip(ours, theirs)):
        ga, gb = a.grad.cpu().double(), b.grad
        if i % 2:
            # Exactly symmetric per row; a shared q's is torch's sum over the
            # batch, whose order may differ between (i, j) and (j, i).
            sym = (dict(rtol=0, atol=0) if ga.dim() == 3 else
                   dict(rtol=gtol, atol=gtol * ga.abs().max().item()))
            torch.testing.assert_close(ga, ga.mT, **sym)
            gb = 0.5 * (gb + gb.mT)
        torch.testing.assert_close(ga, gb, rtol=gtol, atol=gtol * gb.abs().max().item())
    bad = S_p.clone()
    bad[5, D - 1, D - 1] = -1.0
    out = gkl.kl_full(mu_p, bad, *args[2:], param="cov", check=False).cpu().double()
    assert torch.isnan(out[5]) and not torch.isnan(out[torch.arange(B) != 5]).any()
    keep = torch.arange(B) != 5
    torch.testing.assert_close(out[keep], ref[keep], rtol=tol, atol=tol)


@pytest.mark.cuda
@pytest.mark.parametrize("param,D,B", [("scale_tril", 7, 40000), ("scale_tril", 20, 9000), ("scale_tril", 40, 2500),
                                       ("cov", 40, 2500), ("cov", 130, 1000)])
def test_cuda_many_rows_equal_cpu(param, D, B, gen):
    """More rows than the grid holds (lane groups: warps stride over the
    rest; blocks: 2112 at most, they stride too), and at D = 130 cov the
    backward's scratch (272 KB) beyond shared memory: a global workspace of
    at most 256 MB for ~980 blocks. The CUDA result equals the CPU one row
    for row, forward and gradients (cov: the same inverses in another order)."""
    mu_p, m_p, _ = inputs(param, (B,), D, gen, torch.float32)
    mu_q, m_q, _ = inputs(param, (B,), D, gen, torch.float32)
    res = {}
    for dev in ("cpu", "cuda"):
        ts = [t.to(dev).requires_grad_() for t in (mu_p, m_p, mu_q, m_q)]
        out = gkl.kl_full(*ts, param=param)
        out.sum().backward()
        res[dev] = [out.detach().cpu()] + [t.grad.cpu() for t in ts]
    for a, b in zip(res["cuda"], res["cpu"]):
        if param == "scale_tril":
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        else:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * b.abs().max().item())


@pytest.mark.parametrize("param", ["scale_tril", "cov"])
@pytest.mark.parametrize("D", [5, 4, 16, 32, 33, 64, 130])
def test_gradients_equal_torch(device, param, D, gen):
    """Against autograd through td.MultivariateNormal (symmetric part for cov),
    with grad_output != 1. B = 20: full and partial blocks of the CPU batch
    kernels (D in 2, 3, 4, 8, 16, 32, 64); D = 33, 130: the per-row path with
    register tiles (partial tiles), whose dLq is a triangular product."""
    B = 20
    mu_p, m_p, _ = inputs(param, (B,), D, gen, device=device)
    mu_q, m_q, _ = inputs(param, (B,), D, gen, device=device)
    w = torch.randn(B, generator=gen, dtype=torch.float64).to(device)
    ours = [t.clone().requires_grad_() for t in (mu_p, m_p, mu_q, m_q)]
    (gkl.kl_full(*ours, param=param) * w).sum().backward()
    theirs = [t.clone().requires_grad_() for t in (mu_p, m_p, mu_q, m_q)]
    kw = "scale_tril" if param == "scale_tril" else "covariance_matrix"
    p = td.MultivariateNormal(theirs[0], **{kw: theirs[1]})
    q = td.MultivariateNormal(theirs[2], **{kw: theirs[3]})
    (td.kl_divergence(p, q) * w).sum().backward()
    for i, (a, b) in enumerate(zip(ours, theirs)):
        ga, gb = a.grad, b.grad
        if i % 2 == 1:
            if param == "cov":
                ga, gb = 0.5 * (ga + ga.mT), 0.5 * (gb + gb.mT)
            else:
                ga, gb = ga.tril(), gb.tril()
        torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-10)
    if param == "cov":  # ours is symmetric by construction
        torch.testing.assert_close(ours[1].grad, ours[1].grad.mT)
    else:  # and lower triangular for scale_tril
        assert torch.all(ours[1].grad.triu(1) == 0)


@pytest.mark.parametrize("param", ["scale_tril", "cov"])
def test_finite_zero_grads_at_p_equals_q(device, param, gen):
    mu, m, _ = inputs(param, (3,), 4, gen, device=device)
    ins = [mu.clone().requires_grad_(), m.clone().requires_grad_(), mu.clone().requires_grad_(),
           m.clone().requires_grad_()]
    kl = gkl.kl_full(*ins, param=param)
    assert torch.all(kl.abs() < 1e-12)
    kl.sum().backward()
    for t in ins:
        assert torch.isfinite(t.grad).all() and t.grad.abs().max() < 1e-10


@pytest.mark.parametrize("param", ["scale_tril", "cov"])
@pytest.mark.parametrize("dtype,cond", [(torch.float64, 1e4), (torch.float32, 1e3)])
def test_ill_conditioned(device, param, dtype, cond, gen):
    D = 8
    mu_p, m_p, _ = inputs(param, (16,), D, gen, dtype, device, cond=cond)
    mu_q, m_q, _ = inputs(param, (16,), D, gen, dtype, device, cond=cond)
    out = gkl.kl_full(mu_p, m_p, mu_q, m_q, param=param)
    # Reference in float64 on the same (rounded) inputs.
    if param == "scale_tril":
        Sp = m_p.cpu().double() @ m_p.cpu().double().mT
        Sq = m_q.cpu().double() @ m_q.cpu().double().mT
    else:
        Sp, Sq = m_p.cpu().double(), m_q.cpu().double()
    ref = kl_full_ref(mu_p.cpu(), Sp, mu_q.cpu(), Sq)
    rtol = 1e-8 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(out.cpu().double(), ref, rtol=rtol, atol=0)


@pytest.mark.parametrize("param", ["scale_tril", "cov"])
@pytest.mark.parametrize("D", [6, 4, 16])
def test_near_zero_float32(device, param, D, gen):
    """KL ~ 1e-8: float32 within 1e-2 relative of float64 on the same float32
    inputs, never negative (torch's float32 MVN KL is off by orders of
    magnitude here and goes negative)."""
    B = 200
    mu_p, L_p, _ = inputs("scale_tril", (B,), D, gen)
    eps = 3e-5
    mu_q = mu_p + eps * torch.randn(B, D, generator=gen, dtype=torch.float64)
    L_q = L_p + eps * torch.randn(B, D, D, generator=gen, dtype=torch.float64).tril()
    f = [t.float() for t in (mu_p, L_p, mu_q, L_q)]
    if param == "cov":
        f[1] = f[1] @ f[1].mT
        f[3] = f[3] @ f[3].mT
        f[1] = 0.5 * (f[1] + f[1].mT)
        f[3] = 0.5 * (f[3] + f[3].mT)
        Sp, Sq = f[1].double(), f[3].double()
    else:
        Sp, Sq = f[1].double() @ f[1].double().mT, f[3].double() @ f[3].double().mT
    ref = kl_full_ref(f[0], Sp, f[2], Sq)
    assert 1e-10 < ref.median() < 1e-6
    out = gkl.kl_full(*(t.to(device) for t in f), param=param).cpu().double()
    assert torch.all(out >= 0)
    rel = ((out - ref).abs() / ref).max().item()
    assert rel <= 1e-2, rel


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_cov(device, dtype, gen):
    """Half inputs work (torch's Cholesky refuses them), computed in float32."""
    D = 5
    mu_p, S_p, _ = inputs("cov", (8,), D, gen, dtype, device)
    mu_q, S_q, _ = inputs("cov", (8,), D, gen, dtype, device)
    out = gkl.kl_full(mu_p, S_p, mu_q, S_q, param="cov")
    assert out.dtype == dtype
    ref = kl_full_ref(mu_p.cpu(), S_p.cpu().double(), mu_q.cpu(), S_q.cpu().double())
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-2, atol=1e-2)
    x = S_p.clone().requires_grad_()
    gkl.kl_full(mu_p, x, mu_q, S_q, param="cov").sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize("param", ["scale_tril", "cov"])
def test_opcheck(device, param, gen):
    mu_p, m_p, _ = inputs(param, (3,), 4, gen, device=device)
    mu_q, m_q, _ = inputs(param, (3,), 4, gen, device=device)
    for args in [(mu_p.clone().requires_grad_(), m_p.clone().requires_grad_(), mu_q, m_q, param, True),
                 (mu_p, m_p.clone().requires_grad_(), None, None, param, False)]:
        torch.library.opcheck(torch.ops.gaussian_kl.kl_full.default, args)
    g = torch.randn(3, generator=gen, dtype=torch.float64).to(device)
    for mask in ([True, True, True, True], [False, True, False, False]):
        torch.library.opcheck(torch.ops.gaussian_kl.kl_full_backward.default,
                              (g, mu_p, m_p, mu_q, m_q, param, mask))


def test_torch_compile_fullgraph(device, gen):
    torch._dynamo.reset()

    def loss(mu, L, mu_q, L_q):
        return gkl.kl_full(mu, L, mu_q, L_q, param="scale_tril", reduction="mean") + \
            gkl.kl_full(mu, L, param="scale_tril", reduction="sum", check=False)

    compiled = torch.compile(loss, fullgraph=True)
    mu, L, _ = inputs("scale_tril", (8,), 3, gen, torch.float32, device)
    mq, Lq, _ = inputs("scale_tril", (), 3, gen, torch.float32, device)
    a = [t.clone().requires_grad_() for t in (mu, L, mq, Lq)]
    b = [t.clone().requires_grad_() for t in (mu, L, mq, Lq)]
    oc, oe = compiled(*a), loss(*b)
    torch.testing.assert_close(oc, oe)
    oc.backward()
    oe.backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad)


# ------------------------------------------------------------------ bad input
def test_non_pd_names_argument_and_index(device, gen):
    mu_p, S_p, _ = inputs("cov", (4, 3), 5, gen, device=device)
    mu_q, S_q, _ = inputs("cov", (4, 3), 5, gen, device=device)
    S_q[2, 1] = -S_q[2, 1]  # negative definite
    with pytest.raises(ValueError, match=r"m_q \(param='cov'\) is not positive definite at batch index \(2, 1\)"):
        gkl.kl_full(mu_p, S_p, mu_q, S_q, param="cov")
    out = gkl.kl_full(mu_p, S_p, mu_q, S_q, param="cov", check=False)
    good = gkl.kl_full(mu_p, S_p, mu_q, S_q.abs() + 0 * S_q, param="cov", check=False)
    assert torch.isnan(out[2, 1]) and torch.isfinite(out).sum() == 11
    # A shared, non-PD q: every row is invalid, the error names m_q.
    bad_q = -torch.eye(5, dtype=torch.float64, device=device)
    with pytest.raises(ValueError, match="m_q .*not positive definite"):
        gkl.kl_full(mu_p, S_p, mu_q[0, 0], bad_q, param="cov")
    del good


def test_scale_tril_nonpositive_diagonal_and_nonfinite(device, gen):
    mu_p, L_p, _ = inputs("scale_tril", (6,), 4, gen, device=device)
    mu_q, L_q, _ = inputs("scale_tril", (6,), 4, gen, device=device)
    good = gkl.kl_full(mu_p, L_p, mu_q, L_q, param="scale_tril")
    L_p[3, 2, 2] = -0.5
    with pytest.raises(ValueError, match=r"m_p \(param='scale_tril'\) must have a positive diagonal.*\(3,\)"):
        gkl.kl_full(mu_p, L_p, mu_q, L_q, param="scale_tril")
    mu_q[4, 1] = float("nan")
    L_q[1, 3, 0] = float("inf")
    out = gkl.kl_full(mu_p, L_p, mu_q, L_q, param="scale_tril", check=False)
    for i in range(6):
        if i in (1, 3, 4):
            assert torch.isnan(out[i])
        else:
            assert out[i] == good[i]
    L_p[3, 2, 2] = 0.5
    with pytest.raises(ValueError, match=r"m_q \(param='scale_tril'\) has a non-finite value.*\(1,\)"):
        gkl.kl_full(mu_p, L_p, mu_q, L_q, param="scale_tril")


def test_shape_errors(gen):
    mu, L, _ = inputs("scale_tril", (4,), 3, gen)
    with pytest.raises(ValueError, match="for a diagonal covariance use kl_diag"):
        gkl.kl_full(mu, torch.ones(4, 3, dtype=torch.float64), param="cov")
    with pytest.raises(ValueError, match="event sizes disagree"):
        gkl.kl_full(mu, torch.eye(5, dtype=torch.float64).expand(4, 5, 5), param="cov")
    with pytest.raises(ValueError, match="batch shapes do not broadcast"):
        gkl.kl_full(mu, L, mu[:3], L[:3], param="scale_tril")
    with pytest.raises(ValueError, match="param must be one of"):
        gkl.kl_full(mu, L, param="precision")
    with pytest.raises(ValueError, match="both mu_q and m_q"):
        gkl.kl_full(mu, L, mu, param="scale_tril")
    with pytest.raises(TypeError, match="integer|dtype"):
        gkl.kl_full(mu, torch.ones(4, 3, 3, dtype=torch.long), param="cov")
    with pytest.raises(ValueError, match="is on meta"):
        gkl.kl_full(mu, L.to("meta"), param="scale_tril")


@pytest.mark.parametrize("op", ["kl_diag", "kl_full", "kl_mixed"])
def test_backward_op_checks_its_grad(op, gen):
    """The backward ops, called directly: a grad without the batch shape is a
    ValueError naming both shapes (a grad on another device than the inputs
    is one too; this machine has one device to test it with)."""
    mu, L, _ = inputs("scale_tril", (4,), 3, gen)
    v = torch.rand(4, 3, generator=gen, dtype=torch.float64) + 0.5
    call = {
        "kl_diag": lambda g: torch.ops.gaussian_kl.kl_diag_backward(g, mu, v, mu, v, "var", [True] * 4),
        "kl_full": lambda g: torch.ops.gaussian_kl.kl_full_backward(g, mu, L, mu, L, "scale_tril", [True] * 4),
        "kl_mixed": lambda g: torch.ops.gaussian_kl.kl_mixed_backward(g, mu, L, mu, v, "scale_tril", "var",
                                                                       [True] * 4),
    }[op]
    with pytest.raises(ValueError, match=op + r"_backward: grad must have the batch shape of the inputs \[4\], got \[5\]"):
        call(torch.ones(5, dtype=torch.float64))
    assert torch.isfinite(call(torch.rand(4, generator=gen, dtype=torch.float64))[1]).all()


@pytest.mark.parametrize("D", [4, 5, 16])
@pytest.mark.parametrize("op", ["full", "mixed"])
def test_gradient_keeps_column_major_layout(D, op, gen):
    """torch.linalg.cholesky returns column-major matrices: the native
    backward writes the gradient in that layout (no copy by autograd), with
    the same values as for a row-major input."""
    B = 7
    L = torch.linalg.cholesky(rand_spd((B,), D, gen))
    assert L.stride()[-2:] == (1, D)
    mu = torch.randn(B, D, generator=gen, dtype=torch.float64)
    v = torch.rand(B, D, generator=gen, dtype=torch.float64) + 0.5
    g = torch.rand(B, generator=gen, dtype=torch.float64)
    if op == "full":
        Lq = torch.linalg.cholesky(rand_spd((B,), D, gen))
        call = lambda Lp, Lq_: torch.ops.gaussian_kl.kl_full_backward(
            g, mu, Lp, mu.flip(0), Lq_, "scale_tril", [True, True, True, True])
        col, row = call(L, Lq), call(L.contiguous(), Lq.contiguous())
        assert col[3].stride() == Lq.stride()
        torch.testing.assert_close(col[3], row[3], rtol=0, atol=0)
    else:
        call = lambda Lp: torch.ops.gaussian_kl.kl_mixed_backward(
            g, mu, Lp, mu.flip(0), v, "scale_tril", "var", [True, True, True, True])
        col, row = call(L), call(L.contiguous())
    assert col[1].stride() == L.stride() and row[1].is_contiguous()
    for a, b in zip(col, row):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("D", [33, 47, 100])
@pytest.mark.parametrize("pair", [("scale_tril", "scale_tril"), ("cov", "cov"),
                                  ("scale_tril", "cov"), ("cov", "scale_tril")])
def test_large_d_row_path(dtype, D, pair, gen):
    """The CPU Rows strategy for large D (register-tiled solves,
    math/full.h under cpu/policies.h's Rows): D not a multiple of the vector
    width nor of the row block, per-row and shared q, forward and every gradient against autograd
    through td.MultivariateNormal in float64 (same inputs)."""
    pp, pq = pair
    B = 3
    for qshape in [(B,), ()]:
        mu_p, m_p, S_p = inputs(pp, (B,), D, gen, dtype)
        mu_q, m_q, S_q = inputs(pq, qshape, D, gen, dtype)
        ours = [t.clone().requires_grad_() for t in (mu_p, m_p, mu_q, m_q)]
        if pp == pq:
            out = gkl.kl_full(*ours, param=pp)
        else:
            out = gkl.kl_mixed(*ours, p_param=pp, q_param=pq)
        w = torch.randn(B, generator=gen, dtype=torch.float64)
        (out.double() * w).sum().backward()
        theirs = [t.detach().double().clone().requires_grad_() for t in (mu_p, m_p, mu_q, m_q)]
        kw = {"scale_tril": "scale_tril", "cov": "covariance_matrix"}
        p = td.MultivariateNormal(theirs[0], **{kw[pp]: theirs[1]})
        q = td.MultivariateNormal(theirs[2], **{kw[pq]: theirs[3]})
        ref = td.kl_divergence(p, q)
        (ref * w).sum().backward()
        tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(out.detach().double(), ref.detach(), **tol)
        for i, (a, b) in enumerate(zip(ours, theirs)):
            ga, gb = a.grad.double(), b.grad
            if i % 2 == 1:
                param = pp if i == 1 else pq
                if param == "cov":
                    ga, gb = 0.5 * (ga + ga.mT), 0.5 * (gb + gb.mT)
                else:
                    assert torch.all(ga.triu(1) == 0)
                    ga, gb = ga.tril(), gb.tril()
            scale = gb.abs().max().clamp_min(1.0)
            torch.testing.assert_close(ga / scale, gb / scale, **tol)


@pytest.mark.parametrize("D", [16, 32, 64])
@pytest.mark.parametrize("layout", ["row", "col", "mixed", "mixed_q", "strided_mu"])
@pytest.mark.parametrize("q", ["full", "shared", "prior"])
def test_float32_scale_tril_kernels(D, layout, q, gen):
    """float32 scale_tril at the sizes with AVX-512 kernels (D = 16: one
    vector per matrix row, or 8-lane halves for the forward when both are
    column-major; 32, 64: two and four; the batch kernels for a strided
    mean, and elsewhere): row- and column-major factors in every
    combination, strided means, per-row, shared and no q; garbage in the
    ignored upper triangle; forward and every gradient (all requested and
    one at a time) against td.MultivariateNormal in float64 on the same
    float32 inputs; a non-finite value in a lower triangle or a mean makes
    its row NaN and no other, one above a diagonal changes nothing."""
    B = 37
    mu_p, L_p, _ = inputs("scale_tril", (B,), D, gen, torch.float32)
    mu_q, L_q, _ = inputs("scale_tril", (B,) if q == "full" else (), D, gen, torch.float32)

    def lay(L, col):  # same values, row- or column-major, 1e3 in the upper triangle
        L = L + torch.triu(torch.full_like(L, 1e3), 1)
        return L.mT.contiguous().mT if col else L.contiguous()

    L_p = lay(L_p, layout in ("col", "mixed"))  # mixed: p column-major, q row-major; mixed_q: the reverse
    L_q = lay(L_q, layout in ("col", "mixed_q"))
    if layout == "strided_mu":
        mu_p = torch.stack([mu_p, -mu_p], -1)[..., 0]
        assert mu_p.stride(-1) == 2
    args = (mu_p, L_p) if q == "prior" else (mu_p, L_p, mu_q, L_q)
    ours = [t.clone().requires_grad_() for t in args]
    views = list(ours)
    if layout == "strided_mu":  # a strided view of a leaf (clone would make it contiguous)
        ours[0] = torch.stack([mu_p, -mu_p], -1).requires_grad_()
        views[0] = ours[0][..., 0]
    for t, a in zip(views, args):
        assert t.stride() == a.stride()
    w = torch.randn(B, generator=gen, dtype=torch.float64)
    out = gkl.kl_full(*views, param="scale_tril", check=False)
    (out.double() * w).sum().backward()
    grads = [t.grad for t in ours]
    if layout == "strided_mu":
        assert torch.all(grads[0][..., 1] == 0)
        grads[0] = grads[0][..., 0]
    theirs = [t.detach().double().clone().requires_grad_() for t in args]
    p = td.MultivariateNormal(theirs[0], scale_tril=theirs[1].tril())
    if q == "prior":
        qd = td.MultivariateNormal(torch.zeros(D, dtype=torch.float64), scale_tril=torch.eye(D, dtype=torch.float64))
    else:
        qd = td.MultivariateNormal(theirs[2], scale_tril=theirs[3].tril())
    ref = td.kl_divergence(p, qd)
    (ref * w).sum().backward()
    torch.testing.assert_close(out.detach().double(), ref.detach(), rtol=1e-4, atol=1e-5)
    for i, (a, b) in enumerate(zip(grads, theirs)):
        ga, gb = a.double(), b.grad
        if i % 2 == 1:
            assert torch.all(ga.triu(1) == 0) and a.stride() == args[i].stride()
            gb = gb.tril()
        scale = gb.abs().max().clamp_min(1.0)
        torch.testing.assert_close(ga / scale, gb / scale, rtol=2e-4, atol=2e-4)
    # Each gradient alone (the kernel skips the solves nobody asked for).
    g = w.float()
    op_args = [a.expand(B, *a.shape[-(i % 2 + 1):]) for i, a in enumerate(args)]  # the op wants q broadcast
    op_args += [None, None] if q == "prior" else []
    full = torch.ops.gaussian_kl.kl_full_backward(g, *op_args, "scale_tril", [True] * 4)
    for k in range(len(args)):
        mask = [j == k for j in range(4)]
        one = torch.ops.gaussian_kl.kl_full_backward(g, *op_args, "scale_tril", mask)
        torch.testing.assert_close(one[k], full[k], rtol=0, atol=0)
    # A non-finite value in a lower triangle or a mean poisons its row only
    # (off the diagonal, on it, in the last row); one above the diagonal
    # is ignored.
    bad = [torch.empty_strided(t.shape, t.stride(), dtype=t.dtype).copy_(t) for t in args]  # same layouts
    inf, nan = float("inf"), float("nan")
    bad[1][5, 9, 3] = inf
    bad[1][23, 4, 4] = nan
    bad[1][26, D - 1, D - 1] = inf
    bad[0][30, 2] = -inf
    bad[1][2, 0, D - 1] = nan
    bad[1][3, 1, 2] = -inf
    rows = [5, 23, 26, 30]
    if q == "full":
        bad[2][11, 15] = nan
        bad[3][20, 6, 6] = inf
        bad[3][33, D - 1, D - 1] = inf
        bad[3][34, D - 1, 0] = nan
        bad[3][8, 0, 1] = inf
        rows += [11, 20, 33, 34]
    rows.sort()
    kl = gkl.kl_full(*bad, param="scale_tril", check=False)
    nan = torch.isnan(kl)
    assert nan.nonzero().flatten().tolist() == rows
    torch.testing.assert_close(kl[~nan], out.detach()[~nan], rtol=0, atol=0)
