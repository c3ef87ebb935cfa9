"""The fake chat-completions server for tests: it lives in ``captioner/fake_server.py`` (the
caption benchmark starts it too); this module re-exports it under the tests' name."""

from captioner.fake_server import (
    CAPTION_EN,
    CAPTION_FR,
    CAPTION_ZH,
    MODES,
    STRUCTURED_DOC,
    FakeOpenAI,
    Reply,
    fail_then,
    structured,
    wants_chinese,
)

__all__ = [
    "CAPTION_EN", "CAPTION_FR", "CAPTION_ZH", "MODES", "STRUCTURED_DOC", "FakeOpenAI", "Reply", "fail_then",
    "structured", "wants_chinese",
]
