"""The aesthetic model as the curation stages use it; the model itself is ``models/aesthetic.py``.

Kept so the scorer stage and the score step import one curation-side name; the rewards import
``models.aesthetic`` directly (models never import pipelines).
"""

from models.aesthetic import (  # noqa: F401  (re-exported)
    CLIP_MEAN,
    CLIP_MODEL,
    CLIP_STD,
    HEAD_WIDTHS,
    WEIGHTS_HELP,
    AestheticWeightsMissing,
    aesthetic_head,
    aesthetic_unavailable_reason,
    keyframe_indices,
    load_aesthetic_head,
    load_clip_image_encoder,
    missing_weights_reason,
    preprocess,
    score_frames,
)
