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


def _buffered() -> dict:
    """The environment without PYTHONUNBUFFERED: stdout into a pipe is block-buffered, as for most users."""
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def test_quick_exit_keeps_output_exit_code_and_atexit(tmp_path):
    """exit_now skips interpreter teardown, not what a command wrote or registered (see smtpbench/quickexit)."""
    import subprocess
    import sys

    marker = tmp_path / "atexit-ran"
    code = ("import atexit, sys\n"
            "from smtpbench.quickexit import exit_now\n"
            f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
            "sys.stdout.write('x' * 200_000)\n"
            "sys.stdout.write('\\nend\\n')\n"  # block-buffered into a pipe: only a flush sends it
            "sys.stderr.write('to stderr')\n"
            "exit_now(3)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_buffered())
    assert out.returncode == 3
    assert out.stdout.endswith("x\nend\n") and len(out.stdout) == 200_005
    assert out.stderr == "to stderr"
    assert marker.read_text() == "yes"


def test_quick_exit_into_a_closed_pipe_is_quiet():
    """`smtpbench … | head -1`: the reader is gone before the final flush; no traceback, the command's code."""
    import subprocess
    import sys

    code = ("import sys, time\n"
            "from smtpbench.quickexit import exit_now\n"
            "sys.stdout.write('first\\n'); sys.stdout.flush(); time.sleep(0.5)\n"
            "sys.stdout.write('y' * 100)\n"
            "exit_now(0)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_buffered())
    assert proc.stdout.readline() == b"first\n"
    proc.stdout.close()  # the reader goes away, as `head -1` does
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert err == b""
