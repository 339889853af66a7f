"""batchgen's tests (a package, so `tests.helpers` is imported one way, once)."""
