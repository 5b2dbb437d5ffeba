"""Variational Bayesian linear regression: a full-covariance Gaussian
posterior q(w) = N(m, L L^T) per task, against a shared diagonal
(automatic-relevance) prior p(w) = N(0, diag(tau^2)). The KL(q || p) term is
the native full-diagonal pair of gaussian_kl_cuda: O(D^2) per task, no
factorisation of the prior, no densified diagonal. The model is conjugate, so
the optimum is known in closed form and the script checks it. Runs in seconds
on CPU:

    python examples/variational_posterior.py
"""

import argparse

import torch

import gaussian_kl_cuda as gkl


def exact_posterior(X, y, noise_var, prior_var):
    """N(m*, S*) with S* = (X^T X / s2 + diag(1/tau^2))^-1, m* = S* X^T y / s2."""
    prec = X.mT @ X / noise_var + torch.diag(1 / prior_var)
    S = torch.linalg.inv(prec)
    return (S @ (X.mT @ y.unsqueeze(-1)) / noise_var).squeeze(-1), S


def train(steps: int = 1500, seed: int = 0, verbose: bool = True):
    """Returns the largest absolute errors of the learned mean and covariance
    against the exact posterior (float64)."""
    gen = torch.Generator().manual_seed(seed)
    tasks, n, D = 4, 50, 8
    noise_var = 0.25
    prior_var = torch.logspace(-1, 1, D, dtype=torch.float64)  # relevance per feature
    X = torch.randn(tasks, n, D, generator=gen, dtype=torch.float64)
    w_true = torch.randn(tasks, D, generator=gen, dtype=torch.float64) * prior_var.sqrt()
    y = (X @ w_true.unsqueeze(-1)).squeeze(-1) + noise_var ** 0.5 * torch.randn(
        tasks, n, generator=gen, dtype=torch.float64)

    m = torch.zeros(tasks, D, dtype=torch.float64, requires_grad=True)
    L_off = torch.zeros(tasks, D, D, dtype=torch.float64, requires_grad=True)
    log_diag = torch.full((tasks, D), -1.0, dtype=torch.float64, requires_grad=True)
    prior = gkl.DiagGaussian(torch.zeros(D, dtype=torch.float64), var=prior_var)  # shared [D]
    opt = torch.optim.Adam([m, L_off, log_diag], lr=0.02)
    for step in range(steps):
        L = L_off.tril(-1) + torch.diag_embed(log_diag.exp())
        q = gkl.FullGaussian(m, scale_tril=L)
        # E_q ||y - X w||^2 = ||y - X m||^2 + tr(X^T X L L^T), exactly.
        resid = y - (X @ m.unsqueeze(-1)).squeeze(-1)
        exp_sq = (resid ** 2).sum(-1) + ((X @ L) ** 2).sum((-1, -2))
        nll = 0.5 * exp_sq / noise_var
        kl = gkl.kl(q, prior)  # full-covariance q vs diagonal prior, per task
        loss = (nll + kl).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if verbose and step % 300 == 0:
            print(f"step {step:5d}  -ELBO {loss.item():10.4f}  KL {kl.sum().item():8.4f}")
    m_star, S_star = exact_posterior(X, y, noise_var, prior_var)
    with torch.no_grad():
        L = L_off.tril(-1) + torch.diag_embed(log_diag.exp())
        err_m = (m - m_star).abs().max().item()
        err_S = (L @ L.mT - S_star).abs().max().item()
    if verbose:
        print(f"max |m - m*| = {err_m:.2e}, max |LL^T - S*| = {err_S:.2e} (exact conjugate posterior)")
    return err_m, err_S


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args()
    train(args.steps)
