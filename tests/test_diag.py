"""kl_diag against a float64 reference, torch.distributions, gradcheck,
opcheck, torch.compile, the numerics near p == q, low precision and every
error case. Device-parametrised: the CUDA cases skip (with the reason) where
there is no GPU or no CUDA kernels."""

import math

import pytest
import torch
import torch.distributions as td

import gaussian_kl_cuda as gkl
from _reference import PARAMS, identity_scale, kl_diag_ref, random_loc, random_scale, to_std

SHAPES = [  # (p shape, q shape or None for N(0, I))
    ((0, 4), (0, 4)),  # B = 0
    ((5, 1), (5, 1)),  # D = 1
    ((3, 7), (3, 7)),  # odd D, D < 16 (flat path)
    ((64, 16), (64, 16)),
    ((9, 33), (9, 33)),  # odd D > 16 (row path + tail)
    ((4, 130), (130,)),  # shared [D] prior
    ((6, 20), (1, 20)),  # [1, D] prior
    ((2, 3, 5), (3, 5)),  # two batch dims, q broadcast over the first
    ((2, 1, 12), (4, 12)),  # both sides broadcast
    ((3, 40), None),
    ((0, 3), None),
    ((2, 2, 9), None),
]


def make(shape, param, gen, dtype, device):
    return random_loc(shape, gen, dtype, device), random_scale(shape, param, gen, dtype, device)


def batch_of(p_shape, q_shape):
    return torch.broadcast_shapes(p_shape[:-1], q_shape[:-1] if q_shape else ())


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: f"{s[0]}-{s[1]}")
def test_matches_float64_reference(device, dtype, tol, param, shapes, gen):
    p_shape, q_shape = shapes
    mu_p, s_p = make(p_shape, param, gen, dtype, device)
    if q_shape is None:
        out = gkl.kl_diag(mu_p, s_p, param=param)
        ref = kl_diag_ref(mu_p.cpu(), s_p.cpu(), param=param)
    else:
        mu_q, s_q = make(q_shape, param, gen, dtype, device)
        out = gkl.kl_diag(mu_p, s_p, mu_q, s_q, param=param)
        ref = kl_diag_ref(mu_p.cpu(), s_p.cpu(), mu_q.cpu(), s_q.cpu(), param=param)
    assert out.dtype == dtype and out.device.type == device
    assert out.shape == batch_of(p_shape, q_shape)
    torch.testing.assert_close(out.cpu().double(), ref, **tol)


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("prior", [False, True])
def test_matches_torch_distributions(device, param, prior, gen):
    B, D = 37, 11
    mu_p, s_p = make((B, D), param, gen, torch.float64, device)
    if prior:
        mu_q, s_q = torch.zeros(D, dtype=torch.float64, device=device), None
        q = td.Independent(td.Normal(mu_q, torch.ones_like(mu_q)), 1)
        out = gkl.kl_diag(mu_p, s_p, param=param)
    else:
        mu_q, s_q = make((B, D), param, gen, torch.float64, device)
        q = td.Independent(td.Normal(mu_q, to_std(s_q, param).to(device)), 1)
        out = gkl.kl_diag(mu_p, s_p, mu_q, s_q, param=param)
    p = td.Independent(td.Normal(mu_p, to_std(s_p, param).to(device)), 1)
    torch.testing.assert_close(out, td.kl_divergence(p, q), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32])
@pytest.mark.parametrize("param", PARAMS)
def test_noncontiguous_and_expanded_inputs(device, dtype, tol, param, gen):
    D, B = 24, 10
    base_mu, base_s = make((D, 2 * B), param, gen, dtype, device)
    mu_p = base_mu.t()[::2]  # [B, D] with column stride 2B and row stride 2
    s_p = base_s.t()[::2]
    mu_q, s_q = make((D,), param, gen, dtype, device)
    mu_q_e, s_q_e = mu_q.expand(B, D), s_q.expand(B, D)  # stride-0 rows
    assert not mu_p.is_contiguous()
    out = gkl.kl_diag(mu_p, s_p, mu_q_e, s_q_e, param=param)
    ref = kl_diag_ref(mu_p.cpu(), s_p.cpu(), mu_q.cpu(), s_q.cpu(), param=param)
    torch.testing.assert_close(out.cpu().double(), ref, **tol)
    # Scalar-per-row scale broadcast along D (shape [B, 1]).
    s_col = random_scale((B, 1), param, gen, dtype, device)
    out = gkl.kl_diag(mu_p, s_col, param=param)
    ref = kl_diag_ref(mu_p.cpu(), s_col.expand(B, D).cpu(), param=param)
    torch.testing.assert_close(out.cpu().double(), ref, **tol)


def test_reductions(device, gen):
    mu_p, s_p = make((17, 5), "logvar", gen, torch.float64, device)
    per = gkl.kl_diag(mu_p, s_p, param="logvar")
    torch.testing.assert_close(gkl.kl_diag(mu_p, s_p, param="logvar", reduction="sum"), per.sum())
    torch.testing.assert_close(gkl.kl_diag(mu_p, s_p, param="logvar", reduction="mean"), per.mean())
    assert gkl.kl_diag(mu_p, s_p, param="logvar", reduction="sum").shape == ()


def test_mixed_dtypes_promote(tol, gen):
    mu_p, s_p = make((4, 6), "std", gen, torch.float32, "cpu")
    mu_q, s_q = make((4, 6), "std", gen, torch.float64, "cpu")
    out = gkl.kl_diag(mu_p, s_p, mu_q, s_q, param="std")
    assert out.dtype == torch.float64
    ref = kl_diag_ref(mu_p, s_p, mu_q, s_q, param="std")
    torch.testing.assert_close(out, ref, **tol)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("q_shape", [(6, 5), (5,), None], ids=["q-full", "q-shared", "prior"])
def test_gradcheck(device, param, q_shape, gen):
    mu_p, s_p = make((6, 5), param, gen, torch.float64, device)
    args = [mu_p.requires_grad_(), s_p.requires_grad_()]
    if q_shape is not None:
        mu_q, s_q = make(q_shape, param, gen, torch.float64, device)
        args += [mu_q.requires_grad_(), s_q.requires_grad_()]
    fn = lambda *a: gkl.kl_diag(*a, param=param)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("param", PARAMS)
def test_grad_matches_reference_autograd(device, param, gen):
    """Weighted rows (grad_output != 1), D on both kernel paths."""
    for D in (3, 40):
        mu_p, s_p = make((8, D), param, gen, torch.float64, device)
        mu_q, s_q = make((8, D), param, gen, torch.float64, device)
        w = torch.randn(8, generator=gen, dtype=torch.float64).to(device)
        ins = [t.clone().requires_grad_() for t in (mu_p, s_p, mu_q, s_q)]
        (gkl.kl_diag(*ins, param=param) * w).sum().backward()
        ref_ins = [t.clone().requires_grad_() for t in (mu_p, s_p, mu_q, s_q)]
        (kl_diag_ref(*ref_ins, param=param) * w).sum().backward()
        for a, b in zip(ins, ref_ins):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_only_needed_gradients(device, gen):
    mu_p, s_p = make((4, 3), "var", gen, torch.float64, device)
    mu_q, s_q = make((4, 3), "var", gen, torch.float64, device)
    s_p.requires_grad_()
    grads = torch.ops.gaussian_kl.kl_diag_backward(
        torch.ones(4, dtype=torch.float64, device=device), mu_p, s_p, mu_q, s_q, "var",
        [False, True, False, False])
    assert [g.numel() for g in grads] == [0, 12, 0, 0]
    gkl.kl_diag(mu_p, s_p, mu_q, s_q, param="var").sum().backward()
    assert s_p.grad is not None and mu_p.grad is None


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_zero_grads_at_p_equals_q(device, param, dtype, gen):
    mu, s = make((5, 9), param, gen, dtype, device)
    ins = [mu.clone().requires_grad_(), s.clone().requires_grad_(), mu.clone().requires_grad_(),
           s.clone().requires_grad_()]
    kl = gkl.kl_diag(*ins, param=param)
    assert torch.all(kl == 0)
    kl.sum().backward()
    for t in ins:
        assert torch.isfinite(t.grad).all()
        assert torch.all(t.grad.abs() <= 1e-6)
    # Also against the prior at p == N(0, I).
    m0 = torch.zeros(3, 4, dtype=dtype, device=device, requires_grad=True)
    s0 = torch.full((3, 4), identity_scale(param), dtype=dtype, device=device, requires_grad=True)
    gkl.kl_diag(m0, s0, param=param).sum().backward()
    assert torch.all(m0.grad == 0) and torch.all(s0.grad == 0)


@pytest.mark.parametrize("param", PARAMS)
def test_hessian_matches_closed_form(param, gen):
    """Double backward (create_graph=True): the full Hessian of one row's KL
    w.r.t. (mu_p, s_p, mu_q, s_q) equals that of the float64 reference."""
    D = 3
    mu_p, s_p = make((1, D), param, gen, torch.float64, "cpu")
    mu_q, s_q = make((1, D), param, gen, torch.float64, "cpu")
    x = torch.cat([mu_p, s_p, mu_q, s_q], -1)[0]

    def split(x):
        return [t.unsqueeze(0) for t in x.split(D)]

    ours = torch.autograd.functional.hessian(
        lambda x: gkl.kl_diag(*split(x), param=param).sum(), x, create_graph=True)
    ref = torch.autograd.functional.hessian(lambda x: kl_diag_ref(*split(x), param=param).sum(), x)
    torch.testing.assert_close(ours, ref)
    assert ours.abs().sum() > 0


# ------------------------------------------------------------------ numerics
@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("D", [4, 64])
def test_near_zero_accuracy_float32(device, param, D, gen):
    """KL ~ 1e-8 per row: float32 within 1e-3 relative of float64 computed on
    the same float32 inputs, and never negative."""
    B = 256
    mu_p, s_p = make((B, D), param, gen, torch.float32, "cpu")
    eps = 1e-4 / math.sqrt(D)
    mu_q = mu_p + eps * torch.randn(B, D, generator=gen)
    if param in ("logvar", "logstd"):
        s_q = s_p + eps * torch.randn(B, D, generator=gen)
    else:
        s_q = s_p * (1 + eps * torch.randn(B, D, generator=gen))
    mu_q, s_q = mu_q.float(), s_q.float()
    ref = kl_diag_ref(mu_p, s_p, mu_q, s_q, param=param)
    assert 1e-10 < ref.median() < 1e-6
    out = gkl.kl_diag(*(t.to(device) for t in (mu_p, s_p, mu_q, s_q)), param=param).cpu()
    assert torch.all(out >= 0)
    rel = ((out.double() - ref).abs() / ref).max().item()
    assert rel <= 1e-3, rel


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("param", PARAMS)
def test_half_precision_rule(device, dtype, param, gen):
    """Error vs float64 no more than 2x that of the pure-torch closed form
    evaluated in the same dtype."""
    B, D = 64, 32
    mu_p, s_p = make((B, D), param, gen, dtype, device)
    mu_q, s_q = make((B, D), param, gen, dtype, device)
    ref = kl_diag_ref(mu_p.cpu(), s_p.cpu(), mu_q.cpu(), s_q.cpu(), param=param)
    out = gkl.kl_diag(mu_p, s_p, mu_q, s_q, param=param)
    assert out.dtype == dtype
    # Pure torch in the same dtype (what users write by hand).
    from _reference import to_var
    cast = lambda t: t.to(dtype)  # noqa: E731
    vp, vq = cast(to_var(s_p.cpu(), param)), cast(to_var(s_q.cpu(), param))
    d = mu_q.cpu() - mu_p.cpu()
    naive = 0.5 * (vp / vq + d * d / vq - 1 + torch.log(vq) - torch.log(vp)).sum(-1)
    err_ours = (out.cpu().double() - ref).abs().max().item()
    err_torch = (naive.double() - ref).abs().max().item()
    assert err_ours <= 2 * err_torch, (err_ours, err_torch)
    # Gradients flow in half precision too.
    x = s_p.clone().requires_grad_()
    gkl.kl_diag(mu_p, x, mu_q, s_q, param=param).sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()


_THREADS_SCRIPT = """
import sys, torch
import gaussian_kl_cuda as gkl
torch.set_num_threads(int(sys.argv[1]))
g = torch.Generator().manual_seed(99)
mu_p, mu_q = torch.randn(3000, 37, generator=g), torch.randn(37, generator=g)
s_p, s_q = torch.rand(3000, 37, generator=g) + 0.5, torch.rand(37, generator=g) + 0.5
ins = [t.requires_grad_() for t in (mu_p, s_p, mu_q, s_q)]
out = gkl.kl_diag(*ins, param="std")
(out * torch.linspace(-1, 1, 3000)).sum().backward()
A = torch.randn(400, 12, 12, generator=g)
L = torch.linalg.cholesky(A @ A.mT / 12 + torch.eye(12)).requires_grad_()
m = torch.randn(400, 12, generator=g).requires_grad_()
full = gkl.kl_full(m, L, m.detach().flip(0), L.detach().flip(0), param="scale_tril")
mixed = gkl.kl_mixed(m, L, m.detach().flip(0), s_p[:400, :12].detach(), p_param="scale_tril", q_param="std")
(full.sum() + mixed.sum()).backward()
torch.save([out.detach()] + [t.grad for t in ins] + [full.detach(), mixed.detach(), L.grad, m.grad],
           sys.argv[2])
"""


@pytest.mark.slow
def test_deterministic_and_thread_count_independent(tmp_path):
    """Bitwise-identical forward and backward (diag, full, mixed) with 1 and 2
    threads and run to run. Each thread count runs in its own process: toggling
    torch.set_num_threads inside one process trips an MKL bug in torch's own
    linalg (later torch.linalg.inv calls hang), which would take other tests
    down with it."""
    import subprocess
    import sys

    results = []
    for threads, run in ((1, "a"), (2, "b"), (2, "c")):
        path = tmp_path / f"{run}.pt"
        subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, str(threads), str(path)], check=True,
                       timeout=120)
        results.append(torch.load(path))
    for other in results[1:]:
        for x, y in zip(results[0], other):
            assert torch.equal(x, y)


# ------------------------------------------------------------------ torch.library / compile
@pytest.mark.parametrize("param", ["std", "logvar"])
def test_opcheck(device, param, gen):
    mu_p, s_p = make((5, 7), param, gen, torch.float64, device)
    mu_q, s_q = make((5, 7), param, gen, torch.float64, device)
    samples = [
        (mu_p.clone().requires_grad_(), s_p.clone().requires_grad_(), mu_q, s_q, param, True),
        (mu_p, s_p.clone().requires_grad_(), None, None, param, False),
        (mu_p.float(), s_p.float(), mu_q.float()[0].expand(5, 7), s_q.float()[0].expand(5, 7), param,
         True),
    ]
    for args in samples:
        torch.library.opcheck(torch.ops.gaussian_kl.kl_diag.default, args)
    g = torch.randn(5, generator=gen, dtype=torch.float64).to(device)
    for mask in ([True, True, True, True], [False, True, False, True]):
        torch.library.opcheck(
            torch.ops.gaussian_kl.kl_diag_backward.default, (g, mu_p, s_p, mu_q, s_q, param, mask))
    torch.library.opcheck(
        torch.ops.gaussian_kl.kl_diag_backward.default, (g, mu_p, s_p, None, None, param,
                                                         [True, True, False, False]))


def test_torch_compile_fullgraph(device, gen):
    torch._dynamo.reset()

    def loss(mu, logvar, prior_mu, prior_logvar):
        return gkl.kl_diag(mu, logvar, prior_mu, prior_logvar, param="logvar", reduction="mean") + \
            gkl.kl_diag(mu, logvar, param="logvar", reduction="sum", check=False)

    compiled = torch.compile(loss, fullgraph=True)
    mu, lv = make((16, 8), "logvar", gen, torch.float32, device)
    pm, plv = make((8,), "logvar", gen, torch.float32, device)
    ins_c = [t.clone().requires_grad_() for t in (mu, lv, pm, plv)]
    ins_e = [t.clone().requires_grad_() for t in (mu, lv, pm, plv)]
    out_c = compiled(*ins_c)
    out_e = loss(*ins_e)
    torch.testing.assert_close(out_c, out_e)
    out_c.backward()
    out_e.backward()
    for a, b in zip(ins_c, ins_e):
        torch.testing.assert_close(a.grad, b.grad)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("param", ["std", "var"])
def test_check_nonpositive_scale_names_argument_and_index(device, param, gen):
    mu_p, s_p = make((4, 3, 5), param, gen, torch.float32, device)
    mu_q, s_q = make((4, 3, 5), param, gen, torch.float32, device)
    s_p[2, 1, 3] = -0.5
    s_p[3, 0, 0] = 0.0
    with pytest.raises(ValueError, match=r"s_p \(param='%s'\).*non-positive.*batch index \(2, 1\)" % param):
        gkl.kl_diag(mu_p, s_p, mu_q, s_q, param=param)
    s_p = s_p.abs() + 0.1
    s_q[1, 2, 4] = 0.0
    with pytest.raises(ValueError, match=r"s_q.*batch index \(1, 2\)"):
        gkl.kl_diag(mu_p, s_p, mu_q, s_q, param=param)


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_nonfinite_names_argument_and_index(device, param, bad, gen):
    mu_p, s_p = make((6, 4), param, gen, torch.float32, device)
    mu_q, s_q = make((6, 4), param, gen, torch.float32, device)
    mu_q[4, 1] = bad
    with pytest.raises(ValueError, match=r"mu_q has a non-finite value.*batch index \(4,\)"):
        gkl.kl_diag(mu_p, s_p, mu_q, s_q, param=param)
    mu_q[4, 1] = 0.0
    s_p[5, 3] = bad
    with pytest.raises(ValueError, match=r"s_p.*batch index \(5,\)"):
        gkl.kl_diag(mu_p, s_p, mu_q, s_q, param=param)


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("D", [5, 48])
def test_check_false_isolates_bad_rows(device, param, D, gen):
    mu_p, s_p = make((8, D), param, gen, torch.float32, device)
    mu_q, s_q = make((D,), param, gen, torch.float32, device)
    good = gkl.kl_diag(mu_p, s_p, mu_q, s_q, param=param)
    mu_p[2, 0] = float("inf")
    s_p[5, D - 1] = float("nan")
    if param in ("std", "var"):
        s_p[6, 1] = -1.0
    out = gkl.kl_diag(mu_p, s_p, mu_q, s_q, param=param, check=False)
    bad = [2, 5] + ([6] if param in ("std", "var") else [])
    for i in range(8):
        if i in bad:
            assert torch.isnan(out[i]), i
        else:
            assert out[i] == good[i], i


def test_shape_errors(gen):
    mu, s = make((4, 3), "std", gen, torch.float32, "cpu")
    with pytest.raises(ValueError, match="event sizes.*mu_p \\(4, 3\\).*mu_q \\(4, 5\\)"):
        gkl.kl_diag(mu, s, torch.zeros(4, 5), torch.ones(4, 5), param="std")
    with pytest.raises(ValueError, match="batch shapes do not broadcast"):
        gkl.kl_diag(mu, s, torch.zeros(5, 3), torch.ones(5, 3), param="std")
    with pytest.raises(ValueError, match="s_p must have an event dimension"):
        gkl.kl_diag(mu, torch.tensor(1.0), param="std")
    with pytest.raises(ValueError, match="both mu_q and s_q"):
        gkl.kl_diag(mu, s, mu, param="std")


def test_type_and_choice_errors(gen):
    mu, s = make((4, 3), "std", gen, torch.float32, "cpu")
    with pytest.raises(TypeError, match="s_p has dtype torch.int64"):
        gkl.kl_diag(mu, torch.ones(4, 3, dtype=torch.long), param="std")
    with pytest.raises(TypeError, match="mu_p must be a torch.Tensor"):
        gkl.kl_diag([1.0, 2.0], s, param="std")
    with pytest.raises(TypeError):
        gkl.kl_diag(mu, s)  # param is required, keyword-only
    with pytest.raises(TypeError):
        gkl.kl_diag(mu, s, None, None, "std")  # not positional
    with pytest.raises(ValueError, match="param must be one of"):
        gkl.kl_diag(mu, s, param="sigma")
    with pytest.raises(ValueError, match="reduction must be one of"):
        gkl.kl_diag(mu, s, param="std", reduction="batchmean")


def test_mixed_devices_error(gen):
    mu, s = make((4, 3), "std", gen, torch.float32, "cpu")
    with pytest.raises(ValueError, match="s_p is on meta but mu_p is on cpu"):
        gkl.kl_diag(mu, torch.ones(4, 3, device="meta"), param="std")


def test_cuda_tensor_on_cpu_only_build_says_how_to_rebuild(monkeypatch, gen):
    from gaussian_kl_cuda import _checks, _ops

    monkeypatch.setattr(_ops, "CUDA_KERNELS", False)
    fake_cuda = torch.empty(4, 3, device="meta")

    class FakeDevice:
        type = "cuda"

    class CudaLike(torch.Tensor):
        @property
        def device(self):  # only what the check reads
            return FakeDevice()

    t = fake_cuda.as_subclass(CudaLike)
    with pytest.raises(RuntimeError, match="has no CUDA kernels.*FORCE_CUDA=1"):
        _checks.check_tensors("kl_diag", [("mu_p", t)])


def test_op_level_checks(gen):
    """Direct callers of torch.ops.gaussian_kl.* get clear errors too."""
    mu, s = make((4, 3), "std", gen, torch.float32, "cpu")
    with pytest.raises(ValueError, match="broadcast to one shape"):
        torch.ops.gaussian_kl.kl_diag(mu, s, mu[:, :2], s[:, :2], "std", True)
    with pytest.raises(ValueError, match="param must be one of"):
        torch.ops.gaussian_kl.kl_diag(mu, s, None, None, "sigma", True)
    with pytest.raises(TypeError, match="dtype"):
        torch.ops.gaussian_kl.kl_diag(mu, s.double(), None, None, "std", True)


@pytest.mark.parametrize("dtype", [torch.float32])
@pytest.mark.parametrize("D", [7, 16, 64, 300])
def test_misaligned_rows_and_large_d(device, dtype, tol, D, gen):
    """Rows that are contiguous but not 16-byte aligned (CUDA: scalar-load
    path; CPU: gathered chunks), next to the aligned vectorised case."""
    base_mu, base_s = make((33, D + 1), "logvar", gen, dtype, device)
    mu_p, s_p = base_mu[:, 1:], base_s[:, 1:]
    mu_q, s_q = make((33, D), "logvar", gen, dtype, device)
    ref = kl_diag_ref(mu_p.cpu(), s_p.cpu(), mu_q.cpu(), s_q.cpu(), param="logvar")
    out = gkl.kl_diag(mu_p, s_p, mu_q, s_q, param="logvar")
    torch.testing.assert_close(out.cpu().double(), ref, **tol)
    ins = [t.clone().requires_grad_() for t in (mu_p, s_p)]
    gkl.kl_diag(*ins, mu_q, s_q, param="logvar").sum().backward()
    r_ins = [t.cpu().double().requires_grad_() for t in (mu_p, s_p)]
    kl_diag_ref(*r_ins, mu_q.cpu(), s_q.cpu(), param="logvar").sum().backward()
    for a, b in zip(ins, r_ins):
        torch.testing.assert_close(a.grad.cpu().double(), b.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("device", ["cuda"])
def test_cuda_graph_capture_without_host_sync(device, gen):
    """check=False never syncs: forward + backward capture in a CUDA graph."""
    mu, lv = make((1024, 64), "logvar", gen, torch.float32, device)
    mu.requires_grad_()
    lv.requires_grad_()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up outside the graph
        gkl.kl_diag(mu, lv, param="logvar", reduction="sum", check=False).backward()
    torch.cuda.current_stream().wait_stream(s)
    mu.grad = lv.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = gkl.kl_diag(mu, lv, param="logvar", reduction="sum", check=False)
        out.backward()
    graph.replay()
    torch.cuda.synchronize()
    ref = kl_diag_ref(mu.detach().cpu(), lv.detach().cpu(), param="logvar").sum()
    torch.testing.assert_close(out.detach().cpu().double(), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(mu.grad.cpu(), mu.detach().cpu())
