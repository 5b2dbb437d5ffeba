"""Property tests (hypothesis, bounded so CI stays fast): random shapes,
batch dims, broadcasting, strides, params and dtypes. KL >= 0, KL(p, p) = 0,
agreement with the float64 reference, invariance of the full-covariance KL
under a shared affine map, diag-as-full equals diag, symmetric cov
gradients, consistent reductions."""

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install hypothesis)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import gaussian_kl_cuda as gkl  # noqa: E402
from _reference import PARAMS, kl_diag_ref, kl_full_ref, random_loc, random_scale, to_var  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

batch_shapes = st.lists(st.integers(0, 4), min_size=0, max_size=2).map(tuple)


def strided(t: torch.Tensor, how: int) -> torch.Tensor:
    """The same values under another memory layout: 0 contiguous, 1 a
    non-contiguous copy (every other element of a wider buffer), 2 the
    transpose of a transposed copy."""
    if how == 1:
        wide = torch.empty(t.shape[:-1] + (2 * t.shape[-1],), dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    if how == 2 and t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    return t


@st.composite
def diag_case(draw):
    batch = draw(batch_shapes)
    D = draw(st.integers(1, 9))
    param = draw(st.sampled_from(PARAMS))
    q = draw(st.sampled_from(["none", "rows", "shared", "partial"]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    layouts = draw(st.lists(st.integers(0, 2), min_size=4, max_size=4))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    return batch, D, param, q, seed, layouts, dtype


@SETTINGS
@given(diag_case())
def test_diag_properties(case):
    batch, D, param, q, seed, layouts, dtype = case
    gen = torch.Generator().manual_seed(seed)
    mu_p = random_loc(batch + (D,), gen)
    s_p = random_scale(batch + (D,), param, gen)
    if q == "none":
        qs = ()
    else:
        qshape = {"rows": batch, "shared": (), "partial": batch[-1:]}[q] + (D,)
        qs = (random_loc(qshape, gen), random_scale(qshape, param, gen))
    args = [strided(t.to(dtype), how) for t, how in zip((mu_p, s_p) + qs, layouts)]
    out = gkl.kl_diag(*args, param=param)
    assert out.shape == batch and out.dtype == dtype
    ref = kl_diag_ref(*[a.double() for a in args], param=param) if qs else kl_diag_ref(
        *[a.double() for a in args], param=param)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.double(), ref.expand(batch), **tol)
    assert (out >= 0).all()
    # KL(p, p) = 0 exactly, and reductions agree with "none".
    assert (gkl.kl_diag(args[0], args[1], args[0], args[1], param=param) == 0).all()
    torch.testing.assert_close(gkl.kl_diag(*args, param=param, reduction="sum"), out.sum())
    if out.numel():
        torch.testing.assert_close(gkl.kl_diag(*args, param=param, reduction="mean"), out.mean())


@st.composite
def full_case(draw):
    batch = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple))
    D = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    return batch, D, seed


def rand_spd(batch, D, gen):
    A = torch.randn(batch + (D, D), generator=gen, dtype=torch.float64)
    return A @ A.mT / D + 0.3 * torch.eye(D, dtype=torch.float64)


@SETTINGS
@given(full_case(), st.sampled_from(["scale_tril", "cov"]))
def test_full_properties_and_affine_invariance(case, param):
    batch, D, seed = case
    gen = torch.Generator().manual_seed(seed)
    mu_p, mu_q = random_loc(batch + (D,), gen), random_loc(batch + (D,), gen)
    Sp, Sq = rand_spd(batch, D, gen), rand_spd(batch, D, gen)
    m = (lambda S: torch.linalg.cholesky(S)) if param == "scale_tril" else (lambda S: S)
    out = gkl.kl_full(mu_p, m(Sp), mu_q, m(Sq), param=param)
    torch.testing.assert_close(out, kl_full_ref(mu_p, Sp, mu_q, Sq), rtol=1e-9, atol=1e-10)
    assert (out >= 0).all()
    assert (gkl.kl_full(mu_p, m(Sp), mu_p, m(Sp), param=param).abs() < 1e-12).all()
    # x -> M x + c with M invertible (well conditioned) leaves KL unchanged.
    M = torch.randn(D, D, generator=gen, dtype=torch.float64) + 2 * torch.eye(D, dtype=torch.float64)
    c = torch.randn(D, generator=gen, dtype=torch.float64)
    tf = lambda mu, S: ((mu @ M.T) + c, M @ S @ M.T)
    (a, A), (b, B) = tf(mu_p, Sp), tf(mu_q, Sq)
    torch.testing.assert_close(gkl.kl_full(a, m(A), b, m(B), param=param), out, rtol=1e-7, atol=1e-9)


@SETTINGS
@given(full_case(), st.sampled_from(PARAMS))
def test_diag_as_full_equals_diag_and_mixed_agrees(case, param):
    batch, D, seed = case
    gen = torch.Generator().manual_seed(seed)
    mu_p, mu_q = random_loc(batch + (D,), gen), random_loc(batch + (D,), gen)
    s_p, s_q = random_scale(batch + (D,), param, gen), random_scale(batch + (D,), param, gen)
    diag = gkl.kl_diag(mu_p, s_p, mu_q, s_q, param=param)
    Lp, Lq = torch.diag_embed(to_var(s_p, param).sqrt()), torch.diag_embed(to_var(s_q, param).sqrt())
    torch.testing.assert_close(gkl.kl_full(mu_p, Lp, mu_q, Lq, param="scale_tril"), diag)
    torch.testing.assert_close(gkl.kl_mixed(mu_p, Lp, mu_q, s_q, p_param="scale_tril", q_param=param), diag)
    torch.testing.assert_close(gkl.kl_mixed(mu_p, s_p, mu_q, Lq @ Lq, p_param=param, q_param="cov"), diag)


@SETTINGS
@given(full_case())
def test_cov_gradients_are_symmetric(case):
    batch, D, seed = case
    gen = torch.Generator().manual_seed(seed)
    mu_p, mu_q = random_loc(batch + (D,), gen), random_loc(batch + (D,), gen)
    Sp = rand_spd(batch, D, gen).requires_grad_()
    Sq = rand_spd(batch, D, gen).requires_grad_()
    v = (torch.rand(batch + (D,), generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    (gkl.kl_full(mu_p, Sp, mu_q, Sq, param="cov").sum()
     + gkl.kl_mixed(mu_p, Sp, mu_q, v, p_param="cov", q_param="var").sum()).backward()
    for g in (Sp.grad, Sq.grad):
        torch.testing.assert_close(g, g.mT, rtol=0, atol=1e-12)
