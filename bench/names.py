"""Provider names as they appear in the results files (one definition for
bench_kl.py, plots.py, to_markdown.py and compare.py)."""

TD = "torch.distributions"
TD_VALIDATE = "torch.distributions(validate)"
EAGER = "eager closed form"
COMPILED = "compiled closed form"
GKL = "gkl"
GKL_CHECK = "gkl(check)"
# Not a KL: torch summing each input gkl reads once (forward rows).
READ_FLOOR = "read floor (torch.sum)"
