"""torch.func transforms, forward-mode AD and double backward over every
public entry point, against float64 references made of torch ops
(torch.distributions where it has the pair). docs/design.md, "Derivatives
and transforms"."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.distributions as td
import torch.utils._pytree as pytree
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

import gaussian_kl_cuda as gkl
from gaussian_kl_cuda import _autograd
from _reference import random_loc, random_scale, to_std

B, D = 3, 3


def _spd(A):
    """A symmetric positive definite function of a free matrix (how a model
    produces a covariance); derivatives w.r.t. A see only symmetric changes."""
    return A @ A.mT / A.shape[-1] + 0.5 * torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)


def _tril(gen, batch, device):
    A = torch.randn(*batch, D, D, generator=gen, dtype=torch.float64)
    return torch.linalg.cholesky(_spd(A)).to(device)


def _free(gen, batch, device):
    return torch.randn(*batch, D, D, generator=gen, dtype=torch.float64).to(device)


def _normal(mu, s, param):
    return td.Independent(td.Normal(mu, to_std(s, param)), 1)


def _mvn_tril(mu, L):
    return td.MultivariateNormal(mu, scale_tril=L.tril())


def _mvn_cov(mu, S):
    # validate_args=False: torch's symmetry check is data-dependent control
    # flow, which vmap refuses (a torch.distributions limitation).
    return td.MultivariateNormal(mu, S, validate_args=False)


def _std_normal(mu):
    return td.Independent(td.Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)


def _std_mvn(mu):
    return td.MultivariateNormal(torch.zeros_like(mu), scale_tril=torch.eye(mu.shape[-1], dtype=mu.dtype,
                                                                             device=mu.device))


def _case(name, gen, device, shared_q=False):
    """(inputs, ours, reference): ours and reference map the inputs to the
    KL per row; q is [D] (shared) when shared_q."""
    qb = () if shared_q else (B,)
    loc = lambda b: random_loc(b + (D,), gen, device=device)  # noqa: E731
    kind, _, rest = name.partition(":")
    if kind == "diag":
        param, _, q = rest.partition("/")
        s = lambda b: random_scale(b + (D,), param, gen, device=device)  # noqa: E731
        if q == "prior":
            return ((loc((B,)), s((B,))), lambda m, v: gkl.kl_diag(m, v, param=param),
                    lambda m, v: td.kl_divergence(_normal(m, v, param), _std_normal(m)))
        return ((loc((B,)), s((B,)), loc(qb), s(qb)), lambda *a: gkl.kl_diag(*a, param=param),
                lambda m, v, mq, vq: td.kl_divergence(_normal(m, v, param), _normal(mq, vq, param)))
    if kind == "scale_tril":
        if rest == "prior":
            return ((loc((B,)), _tril(gen, (B,), device)), lambda m, L: gkl.kl_full(m, L, param="scale_tril"),
                    lambda m, L: td.kl_divergence(_mvn_tril(m, L), _std_mvn(m)))
        return ((loc((B,)), _tril(gen, (B,), device), loc(qb), _tril(gen, qb, device)),
                lambda *a: gkl.kl_full(*a, param="scale_tril"),
                lambda m, L, mq, Lq: td.kl_divergence(_mvn_tril(m, L), _mvn_tril(mq, Lq)))
    if kind == "cov":
        if rest == "prior":
            return ((loc((B,)), _free(gen, (B,), device)), lambda m, A: gkl.kl_full(m, _spd(A), param="cov"),
                    lambda m, A: td.kl_divergence(_mvn_cov(m, _spd(A)), _std_mvn(m)))
        return ((loc((B,)), _free(gen, (B,), device), loc(qb), _free(gen, qb, device)),
                lambda m, A, mq, Aq: gkl.kl_full(m, _spd(A), mq, _spd(Aq), param="cov"),
                lambda m, A, mq, Aq: td.kl_divergence(_mvn_cov(m, _spd(A)),
                                                      _mvn_cov(mq, _spd(Aq))))
    if kind == "mixed":  # full p vs diagonal q, diagonal p vs full q, scale_tril vs cov
        if rest == "tril/logvar":
            return ((loc((B,)), _tril(gen, (B,), device), loc(qb), random_scale(qb + (D,), "logvar", gen, device=device)),
                    lambda m, L, mq, lv: gkl.kl_mixed(m, L, mq, lv, p_param="scale_tril", q_param="logvar"),
                    lambda m, L, mq, lv: td.kl_divergence(
                        _mvn_tril(m, L), td.MultivariateNormal(mq, scale_tril=torch.diag_embed((0.5 * lv).exp()))))
        if rest == "std/cov":
            return ((loc((B,)), random_scale((B, D), "std", gen, device=device), loc(qb), _free(gen, qb, device)),
                    lambda m, s, mq, A: gkl.kl_mixed(m, s, mq, _spd(A), p_param="std", q_param="cov"),
                    lambda m, s, mq, A: td.kl_divergence(
                        td.MultivariateNormal(m, scale_tril=torch.diag_embed(s)), _mvn_cov(mq, _spd(A))))
        return ((loc((B,)), _tril(gen, (B,), device), loc(qb), _free(gen, qb, device)),
                lambda m, L, mq, A: gkl.kl_mixed(m, L, mq, _spd(A), p_param="scale_tril", q_param="cov"),
                lambda m, L, mq, A: td.kl_divergence(_mvn_tril(m, L), _mvn_cov(mq, _spd(A))))
    if kind == "containers":  # gkl.kl on gkl containers (full p, diagonal q in another param)
        return ((loc((B,)), _tril(gen, (B,), device), loc(qb), random_scale(qb + (D,), "var", gen, device=device)),
                lambda m, L, mq, v: gkl.kl(gkl.FullGaussian(m, scale_tril=L), gkl.DiagGaussian(mq, var=v)),
                lambda m, L, mq, v: td.kl_divergence(
                    _mvn_tril(m, L), td.MultivariateNormal(mq, scale_tril=torch.diag_embed(v.sqrt()))))
    assert kind == "td", name  # gkl.kl on torch.distributions objects
    return ((loc((B,)), _tril(gen, (B,), device), loc(qb), _free(gen, qb, device)),
            lambda m, L, mq, A: gkl.kl(_mvn_tril(m, L), _mvn_cov(mq, _spd(A))),
            lambda m, L, mq, A: td.kl_divergence(_mvn_tril(m, L), _mvn_cov(mq, _spd(A))))


CASES = (
    [f"diag:{p}/{q}" for p in ("std", "var", "logvar", "logstd") for q in ("rows", "prior")]
    + ["scale_tril:rows", "scale_tril:prior", "cov:rows", "cov:prior",
       "mixed:tril/logvar", "mixed:std/cov", "mixed:tril/cov", "containers:", "td:"]
)
TOL = dict(rtol=1e-9, atol=1e-10)


def _close(a, b):
    la, lb = pytree.tree_leaves(a), pytree.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        torch.testing.assert_close(x, y, **TOL)


def _total(f):
    return lambda *a: f(*a).sum()


def _argnums(x):
    return tuple(range(len(x)))


@pytest.mark.parametrize("case", CASES)
def test_reverse_mode_transforms(device, case, gen):
    """grad, vjp, jacrev over every input, against the reference."""
    x, ours, ref = _case(case, gen, device)
    args = _argnums(x)
    _close(grad(_total(ours), argnums=args)(*x), grad(_total(ref), argnums=args)(*x))
    w = torch.randn(B, generator=gen, dtype=torch.float64).to(device)
    out, fn = vjp(ours, *x)
    out_ref, fn_ref = vjp(ref, *x)
    _close(out, out_ref)
    _close(fn(w), fn_ref(w))
    _close(jacrev(ours, argnums=args)(*x), jacrev(ref, argnums=args)(*x))


@pytest.mark.parametrize("case", CASES)
def test_forward_mode_transforms(device, case, gen):
    """jvp, jacfwd and forward-AD dual tensors, against the reference."""
    x, ours, ref = _case(case, gen, device)
    t = tuple(torch.randn(a.shape, generator=gen, dtype=torch.float64).to(device) for a in x)
    _close(jvp(ours, x, t), jvp(ref, x, t))
    args = _argnums(x)
    _close(jacfwd(ours, argnums=args)(*x), jacfwd(ref, argnums=args)(*x))
    expected = jvp(ref, x, t)[1]
    with fwAD.dual_level():
        out = ours(*(fwAD.make_dual(a, ta) for a, ta in zip(x, t)))
        tangent = fwAD.unpack_dual(out).tangent
    _close(tangent, expected)


@pytest.mark.parametrize("case", CASES)
def test_hessian(device, case, gen):
    """hessian (jacfwd of jacrev: forward mode over the native gradient) of
    the summed KL over every input, and jacrev of jacrev."""
    x, ours, ref = _case(case, gen, device)
    args = _argnums(x)
    _close(hessian(_total(ours), argnums=args)(*x), hessian(_total(ref), argnums=args)(*x))
    _close(jacrev(jacrev(_total(ours), argnums=0), argnums=1)(*x),
           jacrev(jacrev(_total(ref), argnums=0), argnums=1)(*x))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shared_q", [False, True], ids=["q_rows", "q_shared"])
def test_vmap_and_per_sample_grads(device, case, shared_q, gen):
    """vmap over rows (one native call, the vmapped dim folded into the
    batch), and vmap(grad): per-sample gradients with batch-dependent inputs
    (and a q shared by every sample, in_dims None)."""
    x, ours, ref = _case(case, gen, device, shared_q=shared_q)
    in_dims = tuple(None if (shared_q and i >= 2) else 0 for i in range(len(x)))
    _close(vmap(ours, in_dims=in_dims)(*x), vmap(ref, in_dims=in_dims)(*x))
    args = _argnums(x)
    _close(vmap(grad(ours, argnums=args), in_dims=in_dims)(*x), vmap(grad(ref, argnums=args), in_dims=in_dims)(*x))
    # vmap over an extra leading dim, the library's rows inside.
    x2 = tuple(torch.stack([a, 2 * a.detach()]) if d == 0 else a for a, d in zip(x, in_dims))
    _close(vmap(ours, in_dims=in_dims)(*x2), vmap(ref, in_dims=in_dims)(*x2))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("q_grad", [True, False], ids=["q_grad", "q_fixed"])
def test_double_backward(device, case, q_grad, gen):
    """create_graph=True then a second backward (the ordinary autograd path),
    against the reference, and gradgradcheck in float64."""
    x, ours, ref = _case(case, gen, device)
    n = len(x) if q_grad else 2

    def split(f):
        return lambda *a: f(*a, *x[n:])

    xs = [a.clone().requires_grad_() for a in x[:n]]
    v = [torch.randn(a.shape, generator=gen, dtype=torch.float64).to(device) for a in xs]

    def hvp(f):
        g = torch.autograd.grad(split(f)(*xs).sum(), xs, create_graph=True)
        return torch.autograd.grad(sum((gi * vi).sum() for gi, vi in zip(g, v)), xs)

    _close(hvp(ours), hvp(ref))
    assert torch.autograd.gradgradcheck(split(ours), tuple(xs))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["diag:logvar/rows", "scale_tril:rows", "cov:rows", "mixed:tril/cov"])
def test_second_derivatives_at_p_equals_q(device, case, gen):
    """At p == q (KL = 0, gradient 0): hessian against the reference, and
    gradgradcheck with q requiring gradients."""
    x, ours, ref = _case(case, gen, device)
    if case.startswith("mixed"):  # p = q as a scale_tril and as the cov it factors
        A = x[1].detach().clone()
        x = (x[0], torch.linalg.cholesky(_spd(A)), x[0].clone(), A)
    else:
        x = (x[0], x[1], x[0].clone(), x[1].clone())
    torch.testing.assert_close(ours(*x), torch.zeros(B, dtype=torch.float64, device=device), rtol=0, atol=1e-12)
    args = _argnums(x)
    _close(hessian(_total(ours), argnums=args)(*x), hessian(_total(ref), argnums=args)(*x))
    assert torch.autograd.gradgradcheck(ours, tuple(a.clone().requires_grad_() for a in x))


def test_ordinary_call_takes_the_native_node(monkeypatch, gen):
    """Without a transform the op's C++ autograd node is used and the Python
    autograd.Function is not called; under grad or a dual level it is."""
    calls = []
    apply = _autograd.KL.apply
    monkeypatch.setattr(_autograd.KL, "apply", staticmethod(lambda *a: (calls.append(a[0]), apply(*a))[1]))
    mu = torch.randn(B, D, generator=gen, dtype=torch.float64, requires_grad=True)
    lv = torch.randn(B, D, generator=gen, dtype=torch.float64)
    out = gkl.kl_diag(mu, lv, param="logvar")
    assert type(out.grad_fn).__name__ == "CppFunction" and calls == []
    out.sum().backward()
    assert calls == []
    grad(lambda m: gkl.kl_diag(m, lv, param="logvar").sum())(mu.detach())
    n = len(calls)
    assert n > 0 and set(calls) == {"kl_diag"}
    with fwAD.dual_level():
        gkl.kl_diag(fwAD.make_dual(mu.detach(), torch.ones_like(mu)), lv, param="logvar")
    assert len(calls) > n


def test_compile_over_func_grad(device, gen):
    """torch.compile of a function that takes torch.func.grad over our op."""
    x, ours, ref = _case("scale_tril:rows", gen, device)
    f = torch.compile(lambda *a: grad(_total(ours), argnums=(0, 1))(*a), fullgraph=False)
    _close(f(*x), grad(_total(ref), argnums=(0, 1))(*x))


@pytest.mark.parametrize("case", ["diag:std/rows", "scale_tril:rows", "mixed:std/cov"])
def test_third_derivative_by_autograd(device, case, gen):
    """create_graph=True through the second derivative: a third
    directional derivative w.r.t. p's scale, against the reference."""
    x, ours, ref = _case(case, gen, device)
    v, w, u = (torch.randn(x[1].shape, generator=gen, dtype=torch.float64).to(device) for _ in range(3))

    def third(f):
        s = x[1].clone().requires_grad_()
        (g,) = torch.autograd.grad(f(x[0], s, *x[2:]).sum(), s, create_graph=True)
        (h,) = torch.autograd.grad((g * v).sum(), s, create_graph=True)
        return torch.autograd.grad((h * w).sum(), s)[0] * u

    _close(third(ours), third(ref))
