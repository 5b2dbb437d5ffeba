"""A small VAE trained on synthetic data, with the KL term from
gaussian_kl_cuda (the seed use case: encoder outputs (mu, logvar), prior
N(0, I)). Runs in a few seconds on CPU:

    python examples/vae.py
"""

import argparse

import torch
from torch import nn

import gaussian_kl_cuda as gkl


def make_data(n: int, x_dim: int, z_dim: int, gen: torch.Generator) -> torch.Tensor:
    """Points near a z_dim-dimensional linear subspace, plus noise."""
    z = torch.randn(n, z_dim, generator=gen)
    W = torch.randn(z_dim, x_dim, generator=gen)
    return torch.tanh(z @ W) + 0.05 * torch.randn(n, x_dim, generator=gen)


class VAE(nn.Module):
    def __init__(self, x_dim: int, z_dim: int, hidden: int = 64):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim))
        self.dec = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))

    def forward(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterisation
        return self.dec(z), gkl.DiagGaussian(mu, logvar=logvar)


def train(steps: int = 300, seed: int = 0, device: str = "cpu", verbose: bool = True):
    """Returns (first, last) negative ELBO per example, averaged over 20 steps."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_all = make_data(4096, 16, 2, gen).to(device)
    model = VAE(16, 4).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    kl_loss = gkl.GaussianKLLoss(reduction="mean", check=False)  # no host sync per step
    history = []
    for step in range(steps):
        idx = torch.randint(0, x_all.shape[0], (256,), generator=gen).to(device)
        x = x_all[idx]
        x_hat, posterior = model(x)
        rec = 0.5 * ((x_hat - x) ** 2).sum(-1).mean() / 0.05
        kl = kl_loss(posterior)  # KL(q(z|x) || N(0, I)), one number per example, averaged
        loss = rec + kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(loss.item())
        if verbose and step % 50 == 0:
            print(f"step {step:4d}  -ELBO {loss.item():9.3f}  (rec {rec.item():8.3f}, kl {kl.item():6.3f})")
    first, last = sum(history[:20]) / 20, sum(history[-20:]) / 20
    if verbose:
        print(f"-ELBO: first 20 steps {first:.3f}, last 20 steps {last:.3f}")
    return first, last


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() and gkl.CUDA_KERNELS else "cpu")
    args = ap.parse_args()
    train(args.steps, device=args.device)
