"""The sink's fault policy: seeded, reproducible misbehaviour, decided per command.

Rules come from the scenario (``[[sink.faults]]``, ``[sink.greylist]``,
``[sink.rate_limit]``, ``[sink.capacity]``, ``[sink.recipient_outcomes]``)
and can be replaced while the sink runs (``PUT /faults`` on the stats
endpoint). Every decision is a pure function of the rule, the command and a
seeded random stream, except the few that are about time by nature (rate
limits, greylisting, the capacity model), which read one monotonic clock.

The protocol core asks through :class:`~smtpbench.protocol.server.ServerHooks`;
the answer is a reply tuple or an :class:`~smtpbench.protocol.server.Action`
(delay, disconnect, tarpit) that the connection driver carries out.
"""

from __future__ import annotations

import heapq
import math
import random
import re
import time
from collections import OrderedDict

from ..faultspec import DelayDistribution, Fault
from ..protocol.server import MAIL, RCPT, Action, Envelope, ServerHooks
from ..scenario import Sink

Z99 = 2.3263478740408408
_PLUS = ord("+")  # recipient outcomes need a "+" in the local part


def parse_reply(text: str) -> tuple[int, str, str]:
    """``"451 4.7.1 try later"`` -> ``(451, "4.7.1", "try later")``."""
    code, _, rest = text.partition(" ")
    head, _, tail = rest.partition(" ")
    parts = head.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return int(code), head, tail
    return int(code), "", rest


def draw_delay(delay: float | DelayDistribution, rng: random.Random) -> float:
    if not isinstance(delay, DelayDistribution):
        return float(delay)
    if delay.uniform is not None:
        return rng.uniform(*delay.uniform)
    if delay.lognormal is not None:
        median, p99 = delay.lognormal["median"], delay.lognormal["p99"]
        sigma = math.log(max(p99, median * 1.000001) / median) / Z99
        return rng.lognormvariate(math.log(median), sigma)
    return rng.expovariate(1.0 / delay.exponential["mean"])


class _Rule:
    __slots__ = ("spec", "match", "reply")

    def __init__(self, spec: Fault):
        self.spec = spec
        self.match = re.compile(spec.match) if spec.match else None
        self.reply = parse_reply(spec.reply) if spec.reply else None


class FaultPolicy:
    """One per sink process: the rules and the state time-based faults need."""

    def __init__(self, settings: Sink, seed: int, stats, clock=time.monotonic):
        self.stats = stats
        self.clock = clock
        self.rng = random.Random(seed)
        #: The command stages FaultHooks.command has anything to do for (ServerHooks.command_stages):
        #: one set, changed in place, that every connection's hooks share.
        self.command_stages: set[str] = set()
        self.set_rules(settings.faults)
        self.greylist = settings.greylist if settings.greylist and settings.greylist.enabled else None
        self._grey: OrderedDict[tuple, float] = OrderedDict()
        self.rate_limit = settings.rate_limit
        self._tokens = self.rate_limit.messages_per_second if self.rate_limit else 0.0
        self._refilled = clock()
        self.per_client: dict[str, int] = {}
        self.capacity = settings.capacity
        self._free_at: list[float] = [0.0] * (self.capacity.concurrency if self.capacity else 0)
        self.outcomes = settings.recipient_outcomes if settings.recipient_outcomes.enabled else None
        self._tempfail = parse_reply(settings.recipient_outcomes.tempfail)
        self._reject = parse_reply(settings.recipient_outcomes.reject)
        self._stages()

    def set_rules(self, rules: list[Fault]) -> None:
        """Replace the ``[[sink.faults]]`` rules (at start, or live through the HTTP endpoint)."""
        by_stage: dict[str, list[_Rule]] = {}
        for spec in rules:
            by_stage.setdefault(spec.on, []).append(_Rule(spec))
        self.rules = by_stage
        self.specs = list(rules)
        if hasattr(self, "outcomes"):  # live, not the first call from __init__
            self._stages()

    def _stages(self) -> None:
        stages = set(self.rules)
        if self.outcomes is not None or self.greylist is not None:
            stages.add("RCPT")
        if self.rate_limit is not None:
            stages.add("MAIL")
        # In place, then: sessions already open hold this set.
        self.command_stages.intersection_update(stages)
        self.command_stages.update(stages)
        # What a new connection needs (SinkConnection asks, so that the common case,
        # recipient outcomes only, costs nothing at accept time): the per-client
        # count, the connect and banner stages, and the client's address for those
        # and greylisting; rules may change live, the rate limit and greylisting not.
        self.counts_clients = bool(self.rate_limit and self.rate_limit.connections_per_client)
        self.on_accept = self.counts_clients or "connect" in self.rules or "banner" in self.rules
        self.needs_client = self.on_accept or self.greylist is not None
        self.on_message = self.capacity is not None or "end-of-data" in self.rules  # FaultHooks.message

    @property
    def active(self) -> bool:
        return bool(self.rules or self.greylist or self.rate_limit or self.capacity or self.outcomes)

    # -- the rules ----------------------------------------------------------------

    def decide(self, stage: str, subject: str):
        """The first rule for ``stage`` that matches and fires: a reply tuple, an Action, or None."""
        for rule in self.rules.get(stage, ()):
            spec = rule.spec
            if rule.match is not None and not rule.match.search(subject):
                continue
            if spec.probability < 1.0 and self.rng.random() >= spec.probability:
                continue
            self.stats.faults_injected += 1
            return self._action(rule)
        return None

    def _action(self, rule: _Rule):
        spec = rule.spec
        kind = spec.action
        if kind == "reply":
            return rule.reply
        if kind == "close":
            return rule.reply if rule.reply and rule.reply[0] == 421 else (421, "4.3.2", "Service shutting down")
        if kind == "delay":
            return Action("delay", draw_delay(spec.delay, self.rng), rule.reply)
        if kind == "disconnect":
            return Action("disconnect")
        if kind == "tarpit":
            return Action("tarpit", rate=float(spec.rate), reply=rule.reply)
        return Action("bandwidth", rate=float(spec.rate))

    # -- connection level ---------------------------------------------------------

    def on_connect(self, client: str):
        """Decide at accept time: None, a reply tuple (send it and close), or an Action."""
        rl = self.rate_limit
        # The count already includes this connection (client_opened runs first): N are allowed.
        if rl and rl.connections_per_client and self.per_client.get(client, 0) > rl.connections_per_client:
            self.stats.faults_injected += 1
            return parse_reply(rl.connection_reply)
        return self.decide("connect", client)

    def client_opened(self, client: str) -> None:
        self.per_client[client] = self.per_client.get(client, 0) + 1

    def client_closed(self, client: str) -> None:
        n = self.per_client.get(client, 0) - 1
        if n > 0:
            self.per_client[client] = n
        else:
            self.per_client.pop(client, None)

    # -- time-based policies ---------------------------------------------------------

    def rate_limited(self) -> bool:
        rl = self.rate_limit
        if not rl or not rl.messages_per_second:
            return False
        now = self.clock()
        rate = rl.messages_per_second
        self._tokens = min(rate, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return False
        self.stats.faults_injected += 1
        return True

    def greylisted(self, client: str, sender: str, rcpt: str) -> bool:
        """RFC 6647 greylisting: the first try of a triple is refused; one after ``retry_after`` passes."""
        g = self.greylist
        now = self.clock()
        key = (client, sender.lower(), rcpt.lower())
        first = self._grey.get(key)
        if first is None or now - first > g.expire:
            self._grey[key] = now
            self._grey.move_to_end(key)
            while len(self._grey) > g.max_entries:  # bounded, oldest out
                self._grey.popitem(last=False)
            self.stats.faults_injected += 1
            return True
        if now - first < g.retry_after:
            self.stats.faults_injected += 1
            return True
        return False

    def service_delay(self) -> float:
        """Capacity model: when the next free worker finishes this message, from now."""
        now = self.clock()
        service = draw_delay(self.capacity.service_time, self.rng)
        start = max(now, self._free_at[0])
        heapq.heapreplace(self._free_at, start + service)
        return start + service - now


class FaultHooks(ServerHooks):
    """Per-connection hooks: the policy's rules plus capture (see SinkHooks)."""

    def __init__(self, policy: FaultPolicy, base: ServerHooks, client: str):
        self.policy = policy
        self.base = base
        self.client = client
        self.command_stages = policy.command_stages  # the session calls command() for these only
        self._base_quiet = getattr(base, "quiet", False)

    def command(self, stage: str, session, arg: bytes):
        # Called for every command of every connection: return early when nothing
        # can apply (the default sink only has recipient outcomes, and those need a "+").
        policy = self.policy
        if stage == "RCPT":
            # ``_PLUS in arg``, an octet: CPython tries ``b"+" in arg`` as an integer first and
            # formats (then drops) a TypeError each time, the dearest part of this call.
            if (policy.outcomes is not None and _PLUS in arg) or policy.greylist is not None:
                hit = self._recipient(session, arg.decode("utf-8", "replace"))
                if hit is not None:
                    return hit
        elif stage == "MAIL" and policy.rate_limit is not None and policy.rate_limited():
            return parse_reply(policy.rate_limit.reply)
        if stage not in policy.rules:
            return None
        return policy.decide(stage, _subject(stage, arg.decode("utf-8", "replace")))

    def _recipient(self, session, text: str):
        policy = self.policy
        rcpt = _subject("RCPT", text)
        outcomes = policy.outcomes
        if outcomes is not None and "+" in rcpt:
            local = rcpt.split("@", 1)[0].lower()
            if local.startswith("tempfail+"):
                policy.stats.faults_injected += 1
                return policy._tempfail
            if local.startswith("reject+"):
                policy.stats.faults_injected += 1
                return policy._reject
            if local.startswith("disconnect+"):
                policy.stats.faults_injected += 1
                return Action("disconnect")
        if policy.greylist is not None and session.state in (MAIL, RCPT):
            if policy.greylisted(self.client, session.envelope.mail_from, rcpt):
                return parse_reply(policy.greylist.reply)
        return None

    def message(self, envelope: Envelope, body: bytes | None, size: int):
        policy = self.policy
        if body is None and self._base_quiet and not policy.on_message:
            return None  # nothing here acts on this message (the default sink)
        hit = policy.decide("end-of-data", envelope.mail_from) if "end-of-data" in policy.rules else None
        if hit is not None and not (type(hit) is Action and hit.kind == "delay" and hit.reply is None):
            return hit
        stored = self.base.message(envelope, body, size)
        if stored is not None:
            return stored
        if hit is not None:
            return hit
        if policy.capacity is not None:
            return Action("delay", policy.service_delay())
        return None

    def authenticate(self, mechanism: str, username: str, password: str) -> bool:
        return self.base.authenticate(mechanism, username, password)


_ANGLE = re.compile(r"<([^>]*)>")


def _subject(stage: str, text: str) -> str:
    """What a rule's ``match`` is searched in: the address for MAIL/RCPT, else the argument."""
    if stage in ("MAIL", "RCPT"):
        m = _ANGLE.search(text)
        return m.group(1) if m else text
    return text
