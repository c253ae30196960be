"""Benchmarks: smtpbench measured against real peers, side by side, on loopback.

Run all with ``make bench`` (``python -m benchmarks``), one group with
``python -m benchmarks sink``, one benchmark with ``python -m benchmarks
sink.memory``. Results are printed as tables and written to
``benchmarks/results/<group>.json`` (git-ignored).

To add a benchmark, write a module with ``NAME`` and ``run(options) ->
harness.Report`` and list it under its group in :data:`REGISTRY`.
"""

#: group -> modules (in this package) run for it, in order.
REGISTRY: dict[str, tuple[str, ...]] = {
    "sink": ("sink_core", "sink_throughput", "sink_memory"),
    "locust": ("locust_throughput",),
    "tls": ("tls_chunking",),
    "load": ("load_core", "load_generator", "load_histogram"),
}
