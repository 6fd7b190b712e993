"""Standing offers, decided without I/O: which to write and which to withdraw.

When the dispatcher finds a queue empty it stands an offer there (``offer:<queue>``): the
workers the queue's next small submit leases to itself (submit_small.lua), saving the hop
through the dispatcher. The dispatcher writes what ``StandingOffers.plan`` returns and
then calls ``written``; offers are recomputed only when what they depend on changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from balancer import scheduling
from balancer.common import prefetch
from balancer.common.signals import Offer
from balancer.dispatch_state import DispatchState


@dataclass(frozen=True)
class OfferWrites:
    """What to write (``put``) and delete, and the offers standing once it is done."""

    put: dict[str, Offer]
    delete: tuple[str, ...]
    wanted: dict[str, Offer]
    basis: object


class StandingOffers:
    """The offers we wrote, and what they were computed from."""

    def __init__(self) -> None:
        self.current: dict[str, Offer] = {}  # queue -> the standing offer we wrote
        self.basis: object = None

    def forget(self) -> None:
        """Ours name an old epoch (a new leader): submits refuse them until replaced."""
        self.current, self.basis = {}, None

    def written(self, writes: OfferWrites) -> None:
        self.current, self.basis = writes.wanted, writes.basis

    def plan(self, state: DispatchState, token: str, troubled: frozenset[str]
             ) -> OfferWrites | None:
        """An offer for each queue read empty, changed only when it must: kept while a
        queue fills (the script refuses it then: the queue is not empty); withdrawn when
        no worker serves it, the queue is paused or limited, or a key it involves is
        troubled (a submit's script would trip on it too). None when nothing it depends
        on changed since the last plan written."""
        state.weigh_depths()  # first: it brings state.depths_version up to date
        basis = (token, state.view.version, state.empty, state.configs_version,
                 troubled, frozenset(state.shunned), state.depths_version)
        if basis == self.basis:
            return None
        depths = state.depths(state.empty)
        epoch = token.split("|", 1)[0]
        workers = state.eligible()
        # Only a worker that names a queue is offered (scheduling.offer_workers): the
        # other queues, maybe thousands served by "*" workers, are passed over at once.
        named = frozenset().union(*(w.queues for w in workers if w.capacity > 0))
        wanted = {}
        for q in sorted(state.queue_names):
            if q not in named:
                continue
            config = state.config(q)
            current = self.current.get(q)
            if config.paused or config.concurrency_limit is not None or q in troubled:
                continue
            if q not in state.empty:
                if current is not None:
                    wanted[q] = current
                continue
            before = {w: h for w, _, h, _ in current.workers} if current is not None else {}
            offered = scheduling.offer_workers(q, workers, before)
            others = frozenset().union(*(w.queues for w in offered)) - {q}
            # Places behind running tasks only when every worker serving the queue is
            # named: otherwise one not named may have a free slot.
            depth = prefetch.offer_depth(depths.get(q, 1))
            if depth > 1 and len(offered) < sum(1 for w in workers if w.serves(q)):
                depth = 1
            # A submit taking it reads the others' keys too: none may be troubled.
            if offered and not others & troubled:
                wanted[q] = Offer(epoch, tuple(
                    (w.id, w.capacity, scheduling.offered_host_load(w, before.get(w.id)),
                     prefetch.offered_places(w.capacity, w.long_running, depth))
                    for w in offered), tuple(sorted(others)), depth)
        put = {q: offer for q, offer in wanted.items() if self.current.get(q) != offer}
        delete = tuple(q for q in self.current if q not in wanted)
        return OfferWrites(put, delete, wanted, basis)
