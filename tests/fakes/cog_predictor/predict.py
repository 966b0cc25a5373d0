"""A tiny Cog predictor for tests: returns a prepared MP4 (COG_FAKE_VIDEO) after an optional delay.

Run by the real Cog server from PyPI: `COG_PREDICT_TYPE_STUB=predict.py:Predictor python -m cog.server.http`.
Each prediction appends a line to COG_FAKE_LOG so tests can count how many really ran.
"""

import os
import time

from cog import BasePredictor, Input, Path  # type: ignore[import-not-found]


class Predictor(BasePredictor):  # type: ignore[misc]
    def setup(self) -> None:
        self.video = os.environ["COG_FAKE_VIDEO"]
        self.log = os.environ.get("COG_FAKE_LOG", "")

    def predict(  # noqa: PLR0917 - Cog reads the inputs from the signature
        self,
        prompt: str = Input(description="what to make"),
        width: int = Input(default=512),
        height: int = Input(default=512),
        fps: int = Input(default=8),
        num_frames: int = Input(default=16),
        seed: int = Input(default=-1),
    ) -> Path:
        for name, value in (("width", width), ("height", height), ("fps", fps), ("num_frames", num_frames),
                            ("seed", seed)):  # fmt: skip
            # This Cog build does not validate inputs against the signature: be as strict as a schema would be.
            if type(value) is not int:
                raise ValueError(f"{name}: value is not a valid integer ({value!r})")
        if self.log:
            with open(self.log, "a") as handle:
                handle.write(f"{prompt}|{width}x{height}|{fps}|{num_frames}|{seed}\n")
        time.sleep(float(os.environ.get("COG_FAKE_DELAY", "0")))
        return Path(self.video)
