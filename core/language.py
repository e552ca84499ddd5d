"""Language identification of every item: ISO 639-1 codes (``"en"``, ``"ko"``, ``"es"``).

py3langid (BSD-3-Clause; its model ships in the wheel) ranks 142 classes by a text's byte
n-grams. Most are ISO 639-1 languages; the others are ISO 639-3 codes: a dialect or variety
whose ISO 639-1 language exists is reported as that language (Egyptian and Moroccan Arabic as
``ar``, Cantonese and Wu as ``zh``, ...), ``zxx`` (no linguistic content) as None, and for any
other the best-ranked class with an ISO 639-1 code is taken. Measured accuracy and speed on
each labelled set: ``bench/language.py`` (``docs/languages.md``).

A text with no letters (an emoji, a number, an image without text) has no language: None.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["LANGUAGE_MODEL", "detect_language", "detect_languages", "routed_elsewhere"]

LANGUAGE_MODEL = "py3langid"
# ISO 639-3 classes of py3langid's model -> their ISO 639-1 language (macrolanguage or parent)
TO_ISO_639_1 = {"ary": "ar", "arz": "ar", "uzs": "uz", "gug": "gn", "yue": "zh", "wuu": "zh",
                "sdh": "ku", "fuv": "ff", "kik": "ki"}
NO_LANGUAGE = "zxx"
_lock = threading.Lock()
_identifier: list[Any] = []


def _classify() -> Any:
    if not _identifier:
        with _lock:
            if not _identifier:
                from py3langid import langid

                langid.rank("warm up")  # loads the model once per process
                _identifier.append(langid.rank)
    return _identifier[0]


def detect_language(text: str | None) -> str | None:
    """The language of ``text`` (ISO 639-1), or None where it has no letters."""
    if not text or not any(ch.isalpha() for ch in text):
        return None
    for code, _score in _classify()(text):
        code = str(code)
        if code == NO_LANGUAGE:
            return None
        code = TO_ISO_639_1.get(code, code)
        if len(code) == 2:
            return code
    return None


def detect_languages(texts: Sequence[str | None]) -> list[str | None]:
    return [detect_language(t) for t in texts]


def routed_elsewhere(language: str | None, languages: frozenset[str] | None) -> bool:
    """Whether a text in ``language`` goes to the multilingual model: one of ``languages``
    (None: any language told apart from English); a text with no language stays on the
    English champion."""
    if language is None:
        return False
    return language != "en" if languages is None else language in languages
