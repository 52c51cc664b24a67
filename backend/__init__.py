"""Model X-ray's backend: load a causal LM, capture one forward pass, read it with the lens.

Importable without Streamlit; every result is plain typed numpy data.
"""

from backend.capture import Capture, capture, capture_bytes
from backend.errors import (
                            Cancelled,
                            CaptureTooLarge,
                            EmptyPrompt,
                            ModelLoadError,
                            PromptTooLong,
                            UnsupportedModel,
                            XrayError,
)
from backend.lens import LensSummary, TokenTrajectory, lens_logits, lens_summary, token_trajectory
from backend.loading import BUNDLED_MODEL, LoadedModel, ModelInfo, from_pretrained_objects, load_model

__all__ = [
    "BUNDLED_MODEL", "Cancelled", "Capture", "CaptureTooLarge", "EmptyPrompt", "LensSummary", "LoadedModel",
    "ModelInfo", "ModelLoadError", "PromptTooLong", "TokenTrajectory", "UnsupportedModel",
    "XrayError", "capture", "capture_bytes", "from_pretrained_objects", "lens_logits",
    "lens_summary", "load_model", "token_trajectory",
]
