"""The benchmark (``bench/run.py``, run as a script) and the fuzzer (``python -m bench.fuzz``)."""
