"""register_with_torch: route torch.distributions.kl_divergence to the
native kernels for the Gaussian pairs, and add the two mixed pairs torch
lacks."""

import torch.distributions as td
import torch.distributions.kl as tdkl

from .pairs import kl

_MVN, _IND = td.MultivariateNormal, td.Independent
_PAIRS = ((_MVN, _MVN), (_IND, _IND), (_MVN, _IND), (_IND, _MVN))
_saved = None  # {pair: torch's function or None}, while registered


def _is_diag_normal(x) -> bool:
    return type(x.base_dist) is td.Normal and x.reinterpreted_batch_ndims == 1


def _make(pair, fallback):
    def kl_native(p, q):
        ok = all(not isinstance(x, _IND) or _is_diag_normal(x) for x in (p, q))
        if ok:
            # check=False: kl_divergence validates nothing itself (the
            # distributions do, at construction), and it must not sync.
            return kl(p, q, check=False)
        if fallback is not None:
            return fallback(p, q)
        raise NotImplementedError(
            f"gaussian_kl_cuda: no KL for ({type(p).__name__}, {type(q).__name__}) with these "
            "base distributions (only Independent(Normal, 1) is covered)"
        )

    kl_native.__name__ = f"_gkl_kl_{pair[0].__name__.lower()}_{pair[1].__name__.lower()}"
    return kl_native


def register_with_torch() -> None:
    """Registers gkl's kernels in ``torch.distributions.kl`` for
    (MultivariateNormal, MultivariateNormal), (Independent(Normal, 1),
    Independent(Normal, 1)) and the two mixed pairs torch lacks, so existing
    ``td.kl_divergence(p, q)`` calls get faster (and gain the mixed pairs).

    Pairs we do not cover (an Independent over another base distribution, or
    with ``reinterpreted_batch_ndims != 1``) fall through to torch's own
    implementation. No validation and no host sync (``check=False``), like
    torch's. Idempotent; ``unregister_from_torch()`` restores torch's exact
    previous registry entries.

    Example::

        >>> gkl.register_with_torch()
        >>> td.kl_divergence(td.MultivariateNormal(m, scale_tril=L), td.Independent(td.Normal(m2, s2), 1))
    """
    global _saved
    if _saved is not None:
        return
    saved = {pair: tdkl._KL_REGISTRY.get(pair) for pair in _PAIRS}
    for pair in _PAIRS:
        tdkl._KL_REGISTRY[pair] = _make(pair, saved[pair])
    tdkl._KL_MEMOIZE.clear()  # torch caches the dispatch per type pair
    _saved = saved


def unregister_from_torch() -> None:
    """Undoes ``register_with_torch()`` (no-op when not registered)."""
    global _saved
    if _saved is None:
        return
    for pair, fn in _saved.items():
        if fn is None:
            tdkl._KL_REGISTRY.pop(pair, None)
        else:
            tdkl._KL_REGISTRY[pair] = fn
    tdkl._KL_MEMOIZE.clear()
    _saved = None


def is_registered() -> bool:
    return _saved is not None
