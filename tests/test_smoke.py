"""End-to-end smoke: the sink accepts mail from Python's smtplib and counts it."""

import smtplib


def test_smtplib_messages_counted(sink):
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        for i in range(5):
            refused = client.sendmail("a@example.org", ["b@example.org", "c@example.org"],
                                      f"Subject: {i}\r\n\r\nhello\r\n")
            assert refused == {}
    final = sink.stop()
    assert final["messages"] == 5
    assert final["recipients"] == 10
    assert final["connections_current"] == 0


def test_numpy_starts_no_blas_threads():
    """OpenBLAS's spinning thread pool would take CPU from the server under test (see smtpbench/__init__)."""
    import os
    import subprocess
    import sys

    import pytest

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("counts threads through /proc")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    code = "import smtpbench, numpy, os; print(len(os.listdir('/proc/self/task')))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
