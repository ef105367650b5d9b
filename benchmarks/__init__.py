"""Speed and memory benchmarks: ``python -m benchmarks`` (or ``make bench``)."""
