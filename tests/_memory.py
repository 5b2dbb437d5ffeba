"""Bytes a call asks torch's CPU allocator for (the profiler's memory
accounting): how the tests show that nothing is copied or materialised."""

from torch.profiler import ProfilerActivity, profile


def allocated_bytes(fn, op=None):
    """Everything allocated while fn runs, or, with op (e.g.
    "gaussian_kl::kl_full"), inside that op, including the tensors it returns."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    if op is None:
        return sum(max(e.self_cpu_memory_usage, 0) for e in prof.events())
    return sum(e.cpu_memory_usage for e in prof.key_averages() if e.key == op)
