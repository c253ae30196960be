"""A ready locustfile: the scenario's load on Locust, with smtpbench's exact result.

    locust -f smtpbench/integrations/locustfile.py --headless --scenario scenarios/quickstart.toml \\
        --host 127.0.0.1:2525

Distributed: the same command with ``--master --expect-workers N`` on one machine, and
``locust -f smtpbench/integrations/locustfile.py --worker --master-host MASTER`` on each of the
others (smtpbench installed on all of them; workers get the scenario from the master). The
master writes ``results/<run-id>/result.json`` (or ``--smtp-out DIR``) for ``smtpbench report``.

``ScenarioShape`` runs the scenario's users and duration; ``-u``, ``-r`` and ``-t`` override them.
To write your own locustfile, import the module (``from smtpbench.integrations import locust``)
and subclass ``locust.SmtpUser``; leave ``ScenarioShape`` out to let Locust's options drive.
"""

from smtpbench.integrations.locust import ScenarioShape, SmtpUser  # noqa: F401  (Locust finds them here)
