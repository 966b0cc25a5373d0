"""Use cases of the generation service: create, get, wait, list, cancel. One function each, no transport details."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from contentpipe.common.changes import ChangeNotifier, wait_for, wait_seconds
from contentpipe.common.errors import FailedPrecondition, NotFound
from contentpipe.common.ids import new_id
from contentpipe.common.telemetry import inject_context
from contentpipe.common.workqueue import Lease, add_and_start
from contentpipe.generation.domain.catalogue import Catalogue
from contentpipe.generation.domain.model import Generation, GenerationKind, GenerationState
from contentpipe.generation.domain.validation import NewGeneration, validate_new_generation
from contentpipe.generation.service_layer.ports import (
    AssetStore,
    Canceller,
    GenerationDispatch,
    GenerationIdTaken,
    GenerationRepository,
    InputUrlCheck,
    ListQuery,
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class GenerationServices:
    """The application's entry points; servicers call exactly one method per RPC."""

    repository: GenerationRepository
    catalogue: Catalogue
    assets: AssetStore
    url_check: InputUrlCheck
    canceller: Canceller
    deadline: timedelta
    wake_worker: Callable[[], None] = lambda: None
    dispatch: GenerationDispatch | None = None
    clock: Callable[[], datetime] = _utcnow
    # Told about every committed state change (NotifyingRepository), so `wait` wakes at once.
    changes: ChangeNotifier = field(default_factory=ChangeNotifier)

    async def create(self, owner: str, request: NewGeneration, *, validate_only: bool = False) -> Generation:
        valid = validate_new_generation(request, self.catalogue)
        if valid.options.input_image_uri.startswith(("http://", "https://")):
            await self.url_check(valid.options.input_image_uri)
        elif valid.options.input_image_uri:
            source = await self.repository.get(valid.options.input_image_uri.removeprefix("generations/"))
            if source is None or source.owner != owner:
                raise NotFound(f"{valid.options.input_image_uri} not found", reason="INPUT_GENERATION_NOT_FOUND")
        now = self.clock()
        generation = Generation(
            id=request.generation_id or new_id(),
            owner=owner,
            kind=valid.kind,
            prompt=valid.prompt,
            options=valid.options,
            provider=valid.spec.provider,
            model=valid.spec.reference if valid.spec.version and ":" in request.model else valid.spec.name,
            create_time=now,
            deadline_time=now + self.deadline,
            request_id=request.request_id,
            trace_context=inject_context(),
        )
        if validate_only:
            if request.generation_id:
                await self._check_id_free(owner, request)
            generation.id = ""  # AIP-163: what would be created; no name a client could look up
            return generation

        # Room here to run it now: inserted leased to this replica and started at once (no wake-up, no claim).
        async def add(lease: Lease | None) -> tuple[Generation, bool]:
            added = await self.repository.add(generation, lease)
            return added.generation, added.created

        return self._present(await add_and_start(self.dispatch, add, self.wake_worker))

    async def _check_id_free(self, owner: str, request: NewGeneration) -> None:
        """What a real create would refuse: an id taken by a generation that is not this request's earlier one."""
        existing = await self.repository.get(request.generation_id)
        if existing is None:
            return
        if not (request.request_id and existing.owner == owner and existing.request_id == request.request_id):
            raise GenerationIdTaken(request.generation_id)

    async def _stored(self, generation_id: str) -> Generation | None:
        """The generation as stored: a final state just written here is known without a query."""
        return self.changes.final(generation_id, Generation) or await self.repository.get(generation_id)

    async def get(self, owner: str, generation_id: str) -> Generation:
        generation = await self._stored(generation_id)
        if generation is None or generation.owner != owner:
            raise NotFound(f"generations/{generation_id} not found", reason="GENERATION_NOT_FOUND")
        return self._present(generation)

    async def wait(
        self, owner: str, generation_id: str, *, seen: GenerationState | None, max_wait: float | None
    ) -> Generation:
        """The generation once its state is not `seen` (None: once terminal), or as it is after `max_wait` seconds
        (capped, see contentpipe.common.changes)."""

        async def read() -> Generation:
            generation = await self._stored(generation_id)
            if generation is None or generation.owner != owner:
                raise NotFound(f"generations/{generation_id} not found", reason="GENERATION_NOT_FOUND")
            return generation

        def done(generation: Generation) -> bool:
            return generation.state.terminal or (seen is not None and generation.state != seen)

        generation = await wait_for(
            self.changes,
            generation_id,
            read,
            done,
            wait_seconds(max_wait),
            visible=lambda generation: generation.owner == owner,  # what `read` checks of a row
        )
        return self._present(generation)

    async def list_page(
        self,
        owner: str,
        *,
        limit: int,
        state: GenerationState | None,
        kind: GenerationKind | None,
        after: tuple[datetime, str] | None,
    ) -> tuple[list[Generation], bool]:
        """A page, newest first, and whether more follow."""
        rows = await self.repository.page(ListQuery(owner=owner, limit=limit + 1, state=state, kind=kind, after=after))
        return [self._present(g) for g in rows[:limit]], len(rows) > limit

    async def cancel(self, owner: str, generation_id: str) -> Generation:
        generation = await self.get(owner, generation_id)
        generation.cancel(self.clock())  # FAILED_PRECONDITION when already terminal
        if not await self.repository.save(generation):
            latest = await self.get(owner, generation_id)
            raise FailedPrecondition(
                f"generation is already {latest.state.value}; only QUEUED or RUNNING generations can be cancelled",
                reason="GENERATION_ALREADY_FINISHED",
            )
        await self.canceller.cancel(generation)
        return self._present(generation)

    def _present(self, generation: Generation) -> Generation:
        if generation.outputs:
            now = self.clock()
            generation.outputs = [self.assets.present(asset, now) for asset in generation.outputs]
        return generation
