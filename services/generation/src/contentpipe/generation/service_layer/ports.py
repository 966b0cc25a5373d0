"""Ports the use cases and the worker depend on; adapters implement them (SQL, HTTP providers, storage)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from contentpipe.common.errors import AlreadyExists
from contentpipe.common.workqueue import Lease
from contentpipe.generation.domain.catalogue import ModelSpec
from contentpipe.generation.domain.model import (
    Asset,
    Generation,
    GenerationKind,
    GenerationOptions,
    GenerationState,
    PredictionRecord,
)


@dataclass(frozen=True, slots=True)
class ListQuery:
    owner: str
    limit: int
    state: GenerationState | None = None
    kind: GenerationKind | None = None
    after: tuple[datetime, str] | None = None  # (create_time, id) of the last item of the previous page


class GenerationDispatch(Protocol):
    """The generation queue of this replica, for generations it creates itself: one it can run at once is inserted
    already leased to it and starts without waiting for a claim (`contentpipe.common.workqueue.LeasedWorker`)."""

    def reserve(self) -> Lease | None:
        """The lease to insert a generation with when this replica can run it now (then `start_reserved` or
        `unreserve` follows), else None."""

    def start_reserved(self, generation: Generation) -> None: ...

    def unreserve(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Added:
    """What `GenerationRepository.add` did. `created`: it inserted `generation`, which nobody has started yet.
    Otherwise `generation` is the one an earlier create with the same (owner, request_id) inserted and started; the
    ids cannot tell the two apart when the caller chose the id, and starting it again would run it twice."""

    generation: Generation
    created: bool


class GenerationIdTaken(AlreadyExists):
    """A create chose an id that belongs to a generation it did not make. Says nothing about that generation: it
    may be another user's."""

    def __init__(self, generation_id: str) -> None:
        super().__init__(
            f"generations/{generation_id} already exists: choose another generation_id, or leave it empty to let "
            "the service choose one (a retried create gets its generation back by repeating its request_id)",
            reason="GENERATION_ID_TAKEN",
        )


class GenerationRepository(Protocol):
    async def add(self, generation: Generation, lease: Lease | None = None) -> Added:
        """Insert (already leased when `lease` is given); on a repeated (owner, request_id) return the stored
        generation instead, whatever its id. Raises GenerationIdTaken when the id is taken otherwise."""

    async def get(self, generation_id: str) -> Generation | None: ...

    async def page(self, query: ListQuery) -> list[Generation]: ...

    async def save(self, generation: Generation) -> bool:
        """Persist progress; False (nothing written) when the stored generation is already terminal."""

    async def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[Generation]:
        """Lease QUEUED/RUNNING generations that nobody holds (or whose lease expired)."""

    async def renew(self, worker_id: str, ids: Sequence[str], lease_seconds: float) -> set[str]:
        """Extend this worker's live leases; returns the ids among `ids` it still holds that are still open (the
        rest were cancelled or finished elsewhere, or their lease was lost: the runtime stops them here)."""

    async def release(self, worker_id: str, ids: Sequence[str] | None = None) -> None:
        """Give back this worker's leases (`None`: all rows it holds, e.g. after a restart)."""


@dataclass(frozen=True, slots=True)
class StepInput:
    """One prediction to run: what the provider needs to build the model's input."""

    generation_id: str
    owner: str
    role: str
    kind: GenerationKind
    prompt: str
    options: GenerationOptions
    spec: ModelSpec
    deadline: datetime
    input_image: str = ""


@dataclass(frozen=True, slots=True)
class StepResult:
    """What a finished prediction produced: files to store (URLs, `data:` URIs, `file://` paths) and/or text."""

    files: Sequence[str] = ()
    text: str = ""
    raw_output: Any = None


Checkpoint = Callable[[float | None], Awaitable[None]]


class Provider(Protocol):
    """One AI provider. `run` creates (or resumes) one prediction and returns when it is terminal.

    Durability contract: the provider updates `record` (id, status, create_time) and awaits `checkpoint(progress)`
    to persist it: before anything is created at the provider, and whenever the id or status changes. Given a
    `record` from a previous process it resumes instead of creating a second prediction.
    """

    name: str

    async def run(self, step: StepInput, record: PredictionRecord, checkpoint: Checkpoint) -> StepResult: ...

    async def cancel(self, record: PredictionRecord, spec: ModelSpec) -> None:
        """Cancel at the provider (best effort, bounded in time)."""


@dataclass(frozen=True, slots=True)
class OutputFile:
    source: str
    key: str
    kind: GenerationKind
    metadata: dict[str, str] = field(default_factory=dict)


class AssetStore(Protocol):
    async def ingest(self, output: OutputFile) -> Asset:
        """Fetch (streamed, size-capped), check the content type, probe, store under `key`, describe."""

    def present(self, asset: Asset, now: datetime) -> Asset:
        """The asset with a URI a platform can fetch now (e.g. a fresh pre-signed URL)."""

    async def inline_source(self, asset: Asset) -> str:
        """A URI a provider can read the stored file from (http(s) URL, or a `data:` URI for local files)."""


class PredictionClaims(Protocol):
    async def hold_prediction(self, provider: str, prediction_id: str, generation_id: str) -> bool:
        """Record that `generation_id` holds this provider prediction; False when another generation already does.

        Idempotent for the holder. A prediction found again by looking (its create answer was lost) is adopted only
        through this, so two generations never share one prediction.
        """


class DeliveryStore(Protocol):
    """Provider results received by webhook, kept durably until a worker reads them (it may have been down)."""

    async def save_delivery(self, provider: str, prediction_id: str, prediction: dict[str, Any]) -> None:
        """Keep the latest state of a prediction; a terminal state is never replaced by an earlier one."""

    async def delivery(self, provider: str, prediction_id: str) -> dict[str, Any] | None: ...


class RateLimiter(Protocol):
    async def acquire(self) -> None: ...


class InputUrlCheck(Protocol):
    async def __call__(self, url: str) -> None:
        """Raise InvalidArgument when a user-supplied URL may not be fetched (SSRF policy)."""


class Canceller(Protocol):
    async def cancel(self, generation: Generation) -> None:
        """Stop local work on a generation that was just cancelled and cancel its predictions at the provider."""
