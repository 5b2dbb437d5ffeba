"""Hostile inputs, each with its stated behaviour (docs/design.md, "Reliability"):

- scales from 1e-30 to 1e30, logvar +-80, denormal scales: finite and
  correct where the dtype can represent the KL, else +inf; never NaN for
  finite valid input (forward and gradients);
- NaN / +-inf in any input: check=True raises ValueError naming the argument
  and the batch index; check=False gives NaN in that row only;
- D = 1, diag D = 65536, full D = 512, B = 0;
- expanded (stride 0) and overlapping (as_strided) views read in place;
- wrong dtypes / devices / shapes: TypeError / ValueError;
- junk (NaN, inf, huge) above the diagonal of a scale_tril: ignored.
"""

import math

import pytest
import torch

import gaussian_kl_cuda as gkl
from _memory import allocated_bytes
from _reference import kl_diag_ref, kl_full_ref, rand_spd

NAN, INF = float("nan"), float("inf")


def scalar_kl(vp, vq, delta=0.5):
    """Exact KL of one dimension in float64 (log-space, no overflow)."""
    l = math.log(vp) - math.log(vq)
    return 0.5 * (math.expm1(l) - l + delta * delta * math.exp(-math.log(vq)))


SCALES = [1e-30, 1e-20, 1e-5, 1.0, 1e20, 1e30]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("param", ["std", "var", "logvar", "logstd"])
def test_extreme_scales_finite_where_representable(param, dtype):
    to_s = {"var": lambda v: v, "std": math.sqrt, "logvar": math.log, "logstd": lambda v: 0.5 * math.log(v)}[param]
    big = torch.finfo(dtype).max
    for vp in SCALES:
        for vq in SCALES:
            t = lambda x: torch.tensor([[x]], dtype=dtype, requires_grad=True)
            ins = [t(0.5), t(to_s(vp)), t(0.0), t(to_s(vq))]
            out = gkl.kl_diag(*ins, param=param, check=False)
            exact = scalar_kl(vp, vq)
            got = out.item()
            assert not math.isnan(got), (vp, vq)
            if exact < big / 2:
                assert got == pytest.approx(exact, rel=1e-5), (vp, vq)
            else:
                assert got == INF or got == pytest.approx(exact, rel=1e-5), (vp, vq)
            out.sum().backward()
            for x in ins:
                assert not torch.isnan(x.grad).any(), (vp, vq)


def test_logvar_pm80_float32():
    for lp in (-80.0, 0.0, 80.0):
        for lq in (-80.0, 0.0, 80.0):
            out = gkl.kl_diag(torch.tensor([[0.5]]), torch.tensor([[lp]]), torch.tensor([[0.0]]),
                              torch.tensor([[lq]]), param="logvar", check=False).item()
            exact = scalar_kl(math.exp(lp), math.exp(lq))
            if exact < 3.4e38:
                assert out == pytest.approx(exact, rel=1e-5, abs=1e-40)
            else:
                assert out == INF


@pytest.mark.parametrize("param", ["std", "var"])
def test_denormal_scales_float32(param):
    den = torch.tensor([[1e-40]])
    assert den.item() != 0 and den.item() < torch.finfo(torch.float32).tiny
    one, zero = torch.ones(1, 1), torch.zeros(1, 1)
    p_tiny = gkl.kl_diag(zero, den, zero, one, param=param, check=False).item()
    vp = 1e-80 if param == "std" else 1e-40
    assert p_tiny == pytest.approx(scalar_kl(vp, 1.0, 0.0), rel=1e-4)
    x = den.clone().requires_grad_()
    q_tiny = gkl.kl_diag(zero, one, zero, x, param=param, check=False)
    assert q_tiny.item() == INF  # 1/vq beyond float32: the KL itself is > 3.4e38
    q_tiny.backward()
    assert not torch.isnan(x.grad).any()


def _diag_ins(B=4, D=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, D, generator=g), torch.rand(B, D, generator=g) + 0.5,
            torch.randn(B, D, generator=g), torch.rand(B, D, generator=g) + 0.5]


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize("which", range(4))
def test_nonfinite_anywhere_diag(bad, which):
    ins = _diag_ins()
    ins[which][2, 3] = bad
    name = ["mu_p", "s_p", "mu_q", "s_q"][which]
    with pytest.raises(ValueError, match=rf"{name}.*batch index \(2,\)"):
        gkl.kl_diag(*ins, param="std")
    out = gkl.kl_diag(*ins, param="std", check=False)
    good = gkl.kl_diag(*_diag_ins(), param="std")
    assert torch.isnan(out[2]) and torch.equal(out[[0, 1, 3]], good[[0, 1, 3]])


def _full_ins(B=4, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = torch.linalg.cholesky(rand_spd((B,), D, g)).float()
    return [torch.randn(B, D, generator=g), L, torch.randn(B, D, generator=g), L.flip(0).clone()]


@pytest.mark.parametrize("bad", [NAN, INF])
@pytest.mark.parametrize("which", range(4))
@pytest.mark.parametrize("op", ["full", "mixed"])
def test_nonfinite_anywhere_full_and_mixed(bad, which, op):
    ins = _full_ins()
    if op == "mixed":
        ins[3] = ins[3].diagonal(dim1=-2, dim2=-1).clone()
    idx = (1, 2) if ins[which].dim() == 2 else (1, 2, 1)
    ins[which][idx] = bad
    call = (lambda c: gkl.kl_full(*ins, param="scale_tril", check=c)) if op == "full" else \
        (lambda c: gkl.kl_mixed(*ins, p_param="scale_tril", q_param="std", check=c))
    name = ["mu_p", "m_p", "mu_q", "m_q"][which]
    with pytest.raises(ValueError, match=rf"{name}.*batch index \(1,\)"):
        call(True)
    out = call(False)
    assert torch.isnan(out[1]) and torch.isfinite(out[[0, 2, 3]]).all()


def test_event_size_extremes():
    g = torch.Generator().manual_seed(3)
    # D = 1 for every op.
    mu, s = torch.randn(3, 1, generator=g, dtype=torch.float64), torch.rand(3, 1, generator=g, dtype=torch.float64) + 0.5
    ref = kl_diag_ref(mu, s, mu.flip(0), s.flip(0), param="std")
    torch.testing.assert_close(gkl.kl_diag(mu, s, mu.flip(0), s.flip(0), param="std"), ref)
    torch.testing.assert_close(gkl.kl_full(mu, s.unsqueeze(-1), mu.flip(0), s.flip(0).unsqueeze(-1),
                                           param="scale_tril"), ref)
    torch.testing.assert_close(gkl.kl_mixed(mu, s.unsqueeze(-1), mu.flip(0), s.flip(0),
                                            p_param="scale_tril", q_param="std"), ref)
    # Diagonal D = 65536.
    mu, s = torch.randn(2, 65536, generator=g), torch.rand(2, 65536, generator=g) + 0.5
    torch.testing.assert_close(gkl.kl_diag(mu, s, param="std").double(),
                               kl_diag_ref(mu.double(), s.double(), param="std"), rtol=1e-5, atol=0)
    # Full D = 512 (float64), gradients finite.
    S = rand_spd((1,), 512, g)
    Sq = rand_spd((1,), 512, g)
    mu = torch.randn(1, 512, generator=g, dtype=torch.float64)
    Lp = torch.linalg.cholesky(S).requires_grad_()
    out = gkl.kl_full(mu, Lp, mu.flip(-1), torch.linalg.cholesky(Sq), param="scale_tril")
    torch.testing.assert_close(out, kl_full_ref(mu, S, mu.flip(-1), Sq), rtol=1e-9, atol=1e-9)
    out.sum().backward()
    assert torch.isfinite(Lp.grad).all()


def test_empty_batch_every_op():
    D = 3
    e = lambda *s: torch.zeros(*s, requires_grad=True)
    cases = [
        lambda: gkl.kl_diag(e(0, D), e(0, D) + 1, param="var"),
        lambda: gkl.kl_full(e(0, D), e(0, D, D) + torch.eye(D), param="cov"),
        lambda: gkl.kl_mixed(e(0, D), e(0, D, D) + torch.eye(D), e(0, D), e(0, D) + 1,
                             p_param="scale_tril", q_param="var"),
    ]
    for f in cases:
        out = f()
        assert out.shape == (0,)
        out.sum().backward()


def test_expanded_and_overlapping_views_read_in_place():
    """Views with stride 0, overlapping rows and odd strides give the KL of
    their contiguous copies, and no copy is made: the call allocates only
    its output and the check's flags (B values + B booleans + 1), less than
    one contiguous copy of any input."""
    g = torch.Generator().manual_seed(4)
    B, D = 20, 8
    base = torch.randn(64, generator=g, dtype=torch.float64)
    mu = base.as_strided((B, D), (2, 1))           # overlapping rows
    s = (base.abs() + 0.5).as_strided((B, D), (1, 3))  # overlapping, non-unit column stride
    mq = torch.randn(D, generator=g, dtype=torch.float64).expand(B, D)  # stride 0
    sq = (torch.rand(1, D, generator=g, dtype=torch.float64) + 0.5).expand(B, D)
    L = torch.linalg.cholesky(rand_spd((), D, g)).expand(B, D, D)
    calls = {
        "kl_diag": (lambda *a: gkl.kl_diag(*a, param="std"), (mu, s, mq, sq)),
        "kl_mixed": (lambda *a: gkl.kl_mixed(*a, p_param="scale_tril", q_param="std"), (mu, L, mq, sq)),
    }
    one_copy = B * D * 8
    for name, (fn, args) in calls.items():
        torch.testing.assert_close(fn(*args), fn(*(t.contiguous() for t in args)))
        allocated = allocated_bytes(lambda: fn(*args))
        assert allocated <= B * 8 + B + 1 < one_copy, (name, allocated)
        # The measure sees a copy: the same call on one contiguous() input.
        assert allocated_bytes(lambda: fn(args[0].contiguous(), *args[1:])) >= allocated + one_copy


def test_wrong_dtypes_devices_shapes():
    x = torch.randn(3, 4)
    with pytest.raises(TypeError, match="mu_p has dtype torch.int64"):
        gkl.kl_diag(x.long(), x.exp(), param="std")
    with pytest.raises(ValueError, match="s_p is on meta but mu_p is on cpu"):
        gkl.kl_diag(x, x.to("meta"), param="std")
    with pytest.raises(ValueError, match="event sizes"):
        gkl.kl_diag(x, torch.ones(3, 5), param="std")
    with pytest.raises(ValueError, match="m_p must have shape"):
        gkl.kl_full(x, torch.ones(3, 4, 5), param="scale_tril")
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        gkl.kl_diag(x, [1.0] * 4, param="std")


def test_uniform_fast_path_matches_checked_path():
    """Inputs of one dtype, device and batch shape skip the Python broadcast
    checks (common_call); the same values through the checked path (a q
    given as a broadcast [1, ...] batch, or in float64 and promoted) give the
    same KL, and a tensor subclass (nn.Parameter) takes the fast path."""
    from gaussian_kl_cuda import _checks

    g = torch.Generator().manual_seed(11)
    B, D = 5, 3
    mu_p, mu_q = torch.randn(B, D, generator=g), torch.randn(1, D, generator=g)
    s_p, s_q = torch.rand(B, D, generator=g) + 0.5, torch.rand(1, D, generator=g) + 0.5
    L_p = torch.linalg.cholesky(rand_spd((B,), D, g)).float()
    L_q = torch.linalg.cholesky(rand_spd((1,), D, g)).float()
    same = dict(mu_q=mu_q.expand(B, D).contiguous(), s_q=s_q.expand(B, D).contiguous(),
                L_q=L_q.expand(B, D, D).contiguous())
    sh, sq = mu_p.shape, L_p.shape
    assert _checks.common_call([mu_p, s_p, same["mu_q"], same["s_q"]], [sh] * 4)
    assert _checks.common_call([mu_p, L_p, same["mu_q"], same["L_q"]], [sh, sq] * 2)
    assert not _checks.common_call([mu_p, L_p, mu_q, L_q], [sh, sq] * 2)  # q of batch 1
    assert not _checks.common_call([mu_p, s_p.double()], [sh] * 2)
    assert not _checks.common_call([mu_p, s_p.int()], [sh] * 2)
    assert not _checks.common_call([mu_p.int(), s_p.int()], [sh] * 2)
    assert not _checks.common_call([mu_p, [1.0]], [sh] * 2)
    assert not _checks.common_call([mu_p.sum(), s_p.sum()], [(), ()])  # no event dimension
    assert _checks.common_call([torch.nn.Parameter(mu_p)], [sh])
    assert not _checks.common_call([mu_p.to("meta"), s_p.to("meta")], [sh] * 2)
    for param in ("std", "var"):
        fast = gkl.kl_diag(mu_p, s_p, same["mu_q"], same["s_q"], param=param)
        torch.testing.assert_close(gkl.kl_diag(mu_p, s_p, mu_q, s_q, param=param), fast, rtol=0, atol=0)
        promoted = gkl.kl_diag(mu_p, s_p, same["mu_q"].double(), same["s_q"], param=param)
        assert promoted.dtype == torch.float64
        torch.testing.assert_close(promoted, kl_diag_ref(mu_p, s_p, same["mu_q"], same["s_q"], param=param))
        torch.testing.assert_close(promoted.float(), fast, rtol=1e-5, atol=1e-6)
    fast = gkl.kl_full(mu_p, L_p, same["mu_q"], same["L_q"], param="scale_tril")
    torch.testing.assert_close(gkl.kl_full(mu_p, L_p, mu_q, L_q, param="scale_tril"), fast, rtol=1e-6, atol=1e-7)
    cov = lambda L: L.double() @ L.double().mT
    ref = kl_full_ref(mu_p, cov(L_p), same["mu_q"], cov(same["L_q"]))
    torch.testing.assert_close(fast.double(), ref, rtol=1e-4, atol=1e-6)
    P = torch.nn.Parameter(L_p.clone())
    out = gkl.kl_full(mu_p, P, same["mu_q"], same["L_q"], param="scale_tril", reduction="sum")
    out.backward()
    assert P.grad is not None and torch.isfinite(P.grad).all()


@pytest.mark.parametrize("junk", [NAN, INF, 1e30])
def test_scale_tril_junk_above_diagonal_is_ignored(junk):
    mu, L, mq, Lq = _full_ins()
    J = L + torch.full_like(L, junk).triu(1)
    Jq = Lq + torch.full_like(Lq, junk).triu(1)
    ref = gkl.kl_full(mu, L, mq, Lq, param="scale_tril")
    assert torch.equal(gkl.kl_full(mu, J, mq, Jq, param="scale_tril"), ref)
    v = Lq.diagonal(dim1=-2, dim2=-1).contiguous()
    assert torch.equal(gkl.kl_mixed(mu, J, mq, v, p_param="scale_tril", q_param="std"),
                       gkl.kl_mixed(mu, L, mq, v, p_param="scale_tril", q_param="std"))
    Jr = J.clone().requires_grad_()
    gkl.kl_full(mu, Jr, mq, Jq, param="scale_tril").sum().backward()
    assert (Jr.grad.triu(1) == 0).all() and torch.isfinite(Jr.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("D", [4, 5])  # the CPU batch kernels and the per-row path
def test_extreme_scales_full_and_mixed(dtype, D):
    """Diagonal covariances from 1e-30 to 1e30 through kl_full (scale_tril and
    cov) and both mixed directions: correct where representable, never NaN."""
    big = torch.finfo(dtype).max
    for vp in SCALES:
        for vq in SCALES:
            mu, mq = torch.full((2, D), 0.5, dtype=dtype), torch.zeros(2, D, dtype=dtype)
            Lp = torch.eye(D, dtype=dtype).expand(2, D, D) * math.sqrt(vp)
            Lq = torch.eye(D, dtype=dtype).expand(2, D, D) * math.sqrt(vq)
            vp_, vq_ = torch.full((2, D), vp, dtype=dtype), torch.full((2, D), vq, dtype=dtype)
            exact = D * scalar_kl(vp, vq)
            outs = [
                gkl.kl_full(mu, Lp, mq, Lq, param="scale_tril", check=False),
                gkl.kl_full(mu, Lp @ Lp, mq, Lq @ Lq, param="cov", check=False),
                gkl.kl_mixed(mu, Lp, mq, vq_, p_param="scale_tril", q_param="var", check=False),
                gkl.kl_mixed(mu, vp_, mq, Lq, p_param="var", q_param="scale_tril", check=False),
            ]
            for out in outs:
                got = out[0].item()
                assert not math.isnan(got), (vp, vq)
                if exact < big / 2:
                    assert got == pytest.approx(exact, rel=1e-4), (vp, vq)
                else:
                    assert got == INF or got == pytest.approx(exact, rel=1e-4), (vp, vq)
