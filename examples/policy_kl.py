"""TRPO-style policy update with a Gaussian policy: state-dependent mean and a
shared, state-independent log-std. The trust-region constraint is the mean
KL(pi_old || pi_new) from gaussian_kl_cuda, and the natural-gradient step uses
its Hessian-vector products (double backward, create_graph=True). Synthetic
bandit task (no simulator needed); runs in seconds on CPU:

    python examples/policy_kl.py
"""

import argparse

import torch
from torch import nn

import gaussian_kl_cuda as gkl


class Policy(nn.Module):
    def __init__(self, s_dim: int, a_dim: int):
        super().__init__()
        self.mean = nn.Sequential(nn.Linear(s_dim, 32), nn.Tanh(), nn.Linear(32, a_dim))
        self.log_std = nn.Parameter(torch.zeros(a_dim))  # shared by every state

    def forward(self, s):
        return gkl.DiagGaussian(self.mean(s), logstd=self.log_std)


def log_prob(pi: gkl.DiagGaussian, a):
    z = (a - pi.loc) * torch.exp(-pi.scale)
    return (-0.5 * z * z - pi.scale).sum(-1)  # up to a constant


def flat_grad(y, params, **kw):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(y, params, **kw)])


def conjugate_gradient(fvp, b, iters=10):
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        Ap = fvp(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + rr_new / rr * p
        rr = rr_new
    return x


def train(iters: int = 15, max_kl: float = 0.01, seed: int = 0, verbose: bool = True):
    """Returns per-iteration (mean KL of the accepted step, mean reward)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    s_dim, a_dim, n = 6, 3, 2048
    W_star = torch.randn(s_dim, a_dim, generator=gen)
    policy = Policy(s_dim, a_dim)
    params = list(policy.parameters())
    history = []
    for it in range(iters):
        s = torch.randn(n, s_dim, generator=gen)
        with torch.no_grad():
            old = policy(s)
            old = gkl.DiagGaussian(old.loc.clone(), logstd=old.scale.clone())
            a = old.loc + torch.exp(old.scale) * torch.randn(n, a_dim, generator=gen)
            reward = -((a - s @ W_star) ** 2).sum(-1)
            adv = (reward - reward.mean()) / (reward.std() + 1e-8)
            old_logp = log_prob(old, a)

        def surrogate():
            return (torch.exp(log_prob(policy(s), a) - old_logp) * adv).mean()

        def mean_kl():
            return gkl.kl(old, policy(s), reduction="mean", check=False)

        g = flat_grad(surrogate(), params)
        grad_kl = flat_grad(mean_kl(), params, create_graph=True)

        def fvp(v):  # Fisher-vector product = Hessian of the KL times v
            return flat_grad(grad_kl @ v, params, retain_graph=True) + 1e-3 * v

        step = conjugate_gradient(fvp, g)
        step *= torch.sqrt(2 * max_kl / (step @ fvp(step)))
        theta = torch.cat([p.detach().reshape(-1) for p in params])
        base = surrogate().item()
        for frac in (1.0, 0.5, 0.25, 0.125, 0.0625):  # backtracking line search
            _assign(params, theta + frac * step)
            with torch.no_grad():
                kl, sur = mean_kl().item(), surrogate().item()
            if kl <= 1.5 * max_kl and sur > base:
                break
        else:
            _assign(params, theta)
            kl = 0.0
        history.append((kl, reward.mean().item()))
        if verbose:
            print(f"iter {it:3d}  mean reward {reward.mean().item():8.3f}  KL(old||new) {kl:.5f}")
    return history


def _assign(params, flat):
    i = 0
    with torch.no_grad():
        for p in params:
            p.copy_(flat[i:i + p.numel()].view_as(p))
            i += p.numel()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=15)
    args = ap.parse_args()
    train(args.iters)
