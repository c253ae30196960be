"""smtpbench: an SMTP sink and load generator for benchmarking mail servers."""

import os

# numpy's OpenBLAS starts a thread per core at import and lets it spin for about a second
# (measured: 130 ms of CPU, a second core's worth while a run starts). smtpbench does no
# linear algebra; on a small machine that CPU belongs to the server under test.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
