#!/usr/bin/env bash
# Start the sink on loopback, push 20,000 1 KiB messages through it with smtp-source, print the sink's figures.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-2525}
python3 -m smtpbench sink --listen 127.0.0.1:$port --stats-interval 1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 1
if command -v smtp-source >/dev/null || [ -x /usr/sbin/smtp-source ]; then
  PATH=$PATH:/usr/sbin smtp-source -d -s 10 -m 20000 -l 1024 127.0.0.1:$port
else
  python3 - "$port" <<'PY'
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as c:
    for i in range(2000):
        c.sendmail("a@example.org", ["b@example.org"], b"Subject: x\r\n\r\n" + b"x" * 1000 + b"\r\n")
PY
fi
kill -INT $pid; wait $pid
