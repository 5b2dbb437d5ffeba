"""Same code as `python -m gaussian_kl_cuda.bench` (see its --help)."""

from gaussian_kl_cuda.bench import main

if __name__ == "__main__":
    main()
