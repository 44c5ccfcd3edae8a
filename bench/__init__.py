"""The benchmarks: `python bench/run.py` (make bench) runs them; see run.py."""
