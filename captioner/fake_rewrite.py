"""Canned replies of the fake chat server (captioner/fake_server.py) to prompt-rewrite requests.

A rewrite request (captioner/rewrite.py) asks for ``response_format`` json_schema named
``vidloom_rewrite_v1``. The fake answers it, in mode 'good', with ``REWRITE_DOC``: a valid
rewrite of ``REWRITE_PROMPT`` (two dogs, a red ball, a beach) in both languages. The hostile
modes (``REWRITE_MODES``) answer with what a bad model sends: captions in the wrong language,
captions that drop the dogs, or the document cut mid-object (broken JSON).
"""

from __future__ import annotations

import json
from typing import Any

REWRITE_SCHEMA_NAME = "vidloom_rewrite_v1"  # captioner/rewrite.py (kept in step by a test)
REWRITE_PROMPT = "two dogs chase a red ball on a beach"
REWRITE_EN = (
    "Two dogs chase a red ball across a sandy beach, running side by side as the ball bounces ahead "
    "of them toward the waterline. The camera tracks the dogs slowly from the side in a wide shot at "
    "eye level. Both dogs have short fur and move with long, springing strides, kicking up sand; the "
    "red ball is small and shiny. Gentle waves roll onto the shore behind them under bright afternoon "
    "sunlight. The video is realistic footage with natural colours and smooth motion."
)
REWRITE_ZH = (
    "两只狗在沙滩上追逐一个红色的球，并排奔跑，球在它们前方朝海水边弹跳。镜头从侧面以平视角度的远景缓慢跟拍两只狗。"
    "两只狗毛发短，步伐大而有弹性，扬起沙子；红色的球小而有光泽。身后轻柔的海浪涌上岸边，午后阳光明亮。"
    "画面为写实影像，色彩自然，运动流畅。"
)
REWRITE_DOC: dict[str, Any] = {
    "subjects": [{"description": "dogs", "appearance": "short fur", "count": 2},
                 {"description": "a ball", "appearance": "red, small and shiny", "count": 1}],
    "actions": [{"subject": "the dogs", "action": "chase the ball across the beach"}],
    "camera": {"movement": "tracking", "speed": "slow", "shot_size": "wide", "angle": "eye_level"},
    "scene": "a sandy beach with gentle waves",
    "lighting": {"brightness": "bright", "source": "natural"},
    "style": "realistic",
    "content_class": "nature",
    "text_overlays": [],
    "shot_count": 1,
    "caption_en": REWRITE_EN,
    "caption_zh": REWRITE_ZH,
}
_FR = ("Deux chiens poursuivent une balle rouge sur une plage de sable, la caméra les suit lentement "
       "de côté. Les vagues roulent doucement derrière eux sous un soleil éclatant.")
_NO_DOGS_EN = REWRITE_EN.replace("Two dogs chase", "Two children chase").replace("the dogs", "the children") \
    .replace("Both dogs have short fur", "Both children wear shorts")
_NO_DOGS_ZH = REWRITE_ZH.replace("两只狗", "两个孩子")
REWRITE_MODES = {
    "rewrite_wrong_language": "200, a rewrite whose captions are French",
    "rewrite_drops_entity": "200, a rewrite of REWRITE_PROMPT with the two dogs turned into two children",
    "rewrite_broken_json": "200, the rewrite document cut mid-object (not valid JSON)",
}


def is_rewrite(body: dict[str, Any]) -> bool:
    """Whether a chat request asks for a prompt rewrite (its json_schema name)."""
    rf = body.get("response_format")
    spec = rf.get("json_schema") if isinstance(rf, dict) else None
    return isinstance(spec, dict) and spec.get("name") == REWRITE_SCHEMA_NAME


def rewrite_reply(mode: str) -> str:
    """The reply text of a rewrite request in ``mode`` ('good' or a ``REWRITE_MODES`` key)."""
    doc = dict(REWRITE_DOC)
    if mode == "rewrite_wrong_language":
        doc.update(caption_en=_FR, caption_zh=_FR)
    elif mode == "rewrite_drops_entity":
        doc.update(caption_en=_NO_DOGS_EN, caption_zh=_NO_DOGS_ZH,
                   subjects=[{"description": "children", "appearance": "shorts", "count": 2}])
    text = json.dumps(doc, ensure_ascii=False)
    return text[: len(text) // 2] if mode == "rewrite_broken_json" else text
