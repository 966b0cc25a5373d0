"""The model catalogue: which models each provider offers, for which kind, within which limits and defaults."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from contentpipe.generation.domain.model import GenerationKind


@dataclass(frozen=True, slots=True)
class Range:
    low: float
    high: float

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high

    def describe(self) -> str:
        low = int(self.low) if float(self.low).is_integer() else self.low
        high = int(self.high) if float(self.high).is_integer() else self.high
        return f"{low} to {high}"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model a provider can run, with the limits requests are validated against.

    `style` tells the provider adapter how to shape the model's input (e.g. `svd`, `flux`, `llama`, `cog`).
    `first_frame_model` is set on image-to-video models: a text-only request first makes a still with it.
    `max_frames` bounds fps x duration for models that produce a fixed number of frames.
    """

    provider: str
    name: str
    kind: GenerationKind
    style: str
    width: Range = Range(64, 2048)
    height: Range = Range(64, 2048)
    size_multiple: int = 8
    fps: Range = Range(1, 60)
    duration: Range = Range(0.5, 30)
    max_frames: int = 0
    max_tokens: Range = Range(1, 4096)
    default_width: int = 512
    default_height: int = 512
    default_fps: int = 8
    default_duration: float = 2.0
    default_max_tokens: int = 256
    first_frame_model: str = ""
    version: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """`owner/name:version` where a version is pinned, else the bare name."""
        return f"{self.name}:{self.version}" if self.version else self.name


class Catalogue:
    """Models by provider; the first model of a kind per provider is that provider's default for the kind."""

    def __init__(
        self,
        models: Iterable[ModelSpec],
        default_provider: str,
        *,
        unconfigured: Mapping[str, str] | None = None,
    ) -> None:
        self._models: dict[tuple[str, str], ModelSpec] = {}
        self._defaults: dict[tuple[str, GenerationKind], ModelSpec] = {}
        self.default_provider = default_provider
        # Providers this server knows but cannot run, with the setting that enables each: refused at create
        # instead of accepted and then failing (or waiting) at run time.
        self.unconfigured: Mapping[str, str] = dict(unconfigured or {})
        for spec in models:
            self._models[(spec.provider, spec.name)] = spec
            self._defaults.setdefault((spec.provider, spec.kind), spec)
        # Every create's validation asks for these: computed once, the models never change.
        self._providers = tuple(sorted({provider for provider, _ in self._models}))

    @property
    def providers(self) -> tuple[str, ...]:
        return self._providers

    def find(self, provider: str, name: str) -> ModelSpec | None:
        if name:
            found = self._models.get((provider, name))
            if found is None and ":" in name:
                # `owner/name:version` selects a configured model by name with an explicit version.
                base = self._models.get((provider, name.split(":", 1)[0]))
                if base is not None:
                    from dataclasses import replace

                    found = replace(base, version=name.split(":", 1)[1])
            return found
        return None

    def default_for(self, provider: str, kind: GenerationKind) -> ModelSpec | None:
        return self._defaults.get((provider, kind))

    def models_for(self, provider: str) -> list[ModelSpec]:
        return [spec for (p, _), spec in self._models.items() if p == provider]


# Defaults every target platform takes without conversion: a 4:5 1080x1350 JPEG (Instagram's portrait maximum,
# TikTok's 1080p photo limit) and a 720x1280 vertical MP4 at 30 fps for 5 s (Instagram/TikTok need 23-60 fps and
# at least 3 s, X at most 1920x1200, TikTok 360-4096 px a side, LinkedIn at least 75 KB).
LOCAL_MODELS = (
    ModelSpec(provider="local", name="local-video", kind=GenerationKind.VIDEO, style="local",
              default_width=720, default_height=1280, default_fps=30, default_duration=5.0),
    ModelSpec(provider="local", name="local-image", kind=GenerationKind.IMAGE, style="local",
              default_width=1080, default_height=1350),
    ModelSpec(provider="local", name="local-text", kind=GenerationKind.TEXT, style="local"),
)  # fmt: skip

SVD_VERSION = "3f0457e4619daac51203dedb472816fd4af51f3149fa7a9e0b5ffcf1b8172438"
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"


def replicate_models(
    *,
    video_model: str = f"stability-ai/stable-video-diffusion:{SVD_VERSION}",
    image_model: str = "black-forest-labs/flux-schnell",
    text_model: str = "meta/meta-llama-3-8b-instruct",
) -> tuple[ModelSpec, ...]:
    """Replicate models (reference A9): SVD makes at most 25 frames at 5-30 fps from a first frame; flux-schnell
    and SDXL make stills; Llama 3 instruct writes text. The configured models come first (they are defaults)."""
    known = {
        "stability-ai/stable-video-diffusion": ModelSpec(
            provider="replicate", name="stability-ai/stable-video-diffusion", kind=GenerationKind.VIDEO,
            style="svd", width=Range(64, 1024), height=Range(64, 1024), size_multiple=64,
            fps=Range(5, 30), duration=Range(0.5, 5), max_frames=25,
            default_width=1024, default_height=576, default_fps=6, default_duration=4.0,
            first_frame_model="stability-ai/sdxl", version=SVD_VERSION,
        ),
        "anotherjesse/zeroscope-v2-xl": ModelSpec(
            provider="replicate", name="anotherjesse/zeroscope-v2-xl", kind=GenerationKind.VIDEO,
            style="zeroscope", width=Range(256, 1024), height=Range(256, 1024), size_multiple=64,
            fps=Range(1, 30), duration=Range(0.5, 10), max_frames=96,
            default_width=576, default_height=320, default_fps=8, default_duration=3.0,
            version="9f747673945c62801b13b84701c783929c0ee784e4748ec062204894dda1a351",
        ),
        "black-forest-labs/flux-schnell": ModelSpec(
            provider="replicate", name="black-forest-labs/flux-schnell", kind=GenerationKind.IMAGE, style="flux",
            width=Range(256, 1440), height=Range(256, 1440), size_multiple=8,
            default_width=1024, default_height=1024,
        ),
        "stability-ai/sdxl": ModelSpec(
            provider="replicate", name="stability-ai/sdxl", kind=GenerationKind.IMAGE, style="sdxl",
            width=Range(128, 2048), height=Range(128, 2048), size_multiple=8,
            default_width=1024, default_height=1024, version=SDXL_VERSION,
        ),
        "meta/meta-llama-3-8b-instruct": ModelSpec(
            provider="replicate", name="meta/meta-llama-3-8b-instruct", kind=GenerationKind.TEXT, style="llama",
        ),
        "meta/meta-llama-3-70b-instruct": ModelSpec(
            provider="replicate", name="meta/meta-llama-3-70b-instruct", kind=GenerationKind.TEXT, style="llama",
        ),
    }  # fmt: skip
    ordered: list[ModelSpec] = []
    for configured in (video_model, image_model, text_model):
        base, _, version = configured.partition(":")
        spec = known.get(base)
        if spec is None:
            continue
        if version:
            from dataclasses import replace

            spec = replace(spec, version=version)
        known.pop(base)
        ordered.append(spec)
    return (*ordered, *known.values())


def cog_models(entries: Mapping[str, tuple[GenerationKind, str]]) -> tuple[ModelSpec, ...]:
    """Self-hosted Cog models from configuration: name -> (kind, base URL); generic bounds apply."""
    return tuple(
        ModelSpec(provider="cog", name=name, kind=kind, style="cog", extra={"base_url": url})
        for name, (kind, url) in entries.items()
    )
