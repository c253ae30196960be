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
