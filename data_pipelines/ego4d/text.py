"""Cleaning of Ego4D narration texts.

Ego4D narrations are third-person, present-tense sentences with markers:
  "#C C picks a bag of clothes from the floor"   #C: the camera wearer ("C") acts
  "#O man X holds the door"                       #O: another person acts
  "#C C picks #unsure from the table"             #unsure: the annotator could not tell
The exact rule applied by `clean_narration` (in this order):
  1. Unicode whitespace (tabs, newlines, NBSP, ...) collapses to single spaces;
     leading/trailing whitespace is stripped.
  2. "#unsure" (any case, also "#Unsure", "# unsure") is an uncertain word.
     unsure="drop" (default): the narration is rejected (reason "unsure");
     unsure="strip": the marker is removed and the rest kept.
  3. The subject marker "#C C" (any case) and a standalone token "C" (the camera
     wearer, e.g. "... hands C a cup") become `camera_wearer` ("the person" by
     default; "" removes the "#C C" prefix, leaving "picks a bag ...", and keeps
     any other "C").
     "#O" is removed, the person it introduces stays ("man X holds the door").
  4. Any other "#word" marker (e.g. "#summary", a lone "#") is removed.
  5. Whitespace is collapsed again, spaces before , . ; : ! ? are removed, and a
     trailing "." is dropped (CALVIN instructions have none).  Case is kept (the CLIP
     tokenizer lowercases).
  6. A text with no letter or digit besides the markers and the subject "C" is
     rejected (reason "empty"), e.g. "#C C" alone.
"""
from __future__ import annotations

import re

UNSURE_POLICIES = ("drop", "strip")
DEFAULT_CAMERA_WEARER = "the person"

_WS = re.compile(r"\s+")
_UNSURE = re.compile(r"#\s*unsure\b", re.IGNORECASE)
_HASH_C_SUBJECT = re.compile(r"#\s*c\s+c\b", re.IGNORECASE)
_HASH_C = re.compile(r"#\s*c\b", re.IGNORECASE)
_HASH_O = re.compile(r"#\s*o\b", re.IGNORECASE)
_STANDALONE_C = re.compile(r"(?<![\w'#+\-])C(?='s\b|\s|[,.;:!?)]|$)")
_OTHER_MARKER = re.compile(r"#\w*")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_HAS_WORD = re.compile(r"[^\W_]")


def normalize_whitespace(text: str) -> str:
  return _WS.sub(" ", text).strip()


def clean_narration(text: str, *, unsure: str = "drop",
                    camera_wearer: str = DEFAULT_CAMERA_WEARER) -> tuple[str | None, str]:
  """Returns (cleaned_text, "ok") or (None, reason) with reason "unsure" / "empty"."""
  if unsure not in UNSURE_POLICIES:
    raise ValueError(f"unsure must be one of {UNSURE_POLICIES}, got {unsure!r}")
  if not isinstance(text, str):
    return None, "empty"
  text = normalize_whitespace(text)
  if _UNSURE.search(text):
    if unsure == "drop":
      return None, "unsure"
    text = _UNSURE.sub(" ", text)
  # Emptiness is judged on the words the annotator wrote, not the substituted subject.
  content = _OTHER_MARKER.sub(" ", _STANDALONE_C.sub(" ", _HASH_C_SUBJECT.sub(" ", text)))
  if not _HAS_WORD.search(content):
    return None, "empty"
  text = _HASH_C_SUBJECT.sub(f" {camera_wearer} ", text)
  text = _HASH_C.sub(" ", text)
  text = _HASH_O.sub(" ", text)
  if camera_wearer:
    # "C" alone is Ego4D's name for the camera wearer wherever it appears.
    text = _STANDALONE_C.sub(camera_wearer, text)
  text = _OTHER_MARKER.sub(" ", text)
  text = normalize_whitespace(text)
  text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
  text = text.rstrip(" .").strip()
  if not _HAS_WORD.search(text):
    return None, "empty"
  return text, "ok"


def clean_manifest_text(text: str) -> tuple[str | None, str]:
  """Generic manifests: whitespace normalisation only; empty texts are rejected."""
  if not isinstance(text, str):
    return None, "empty"
  text = normalize_whitespace(text)
  if not _HAS_WORD.search(text):
    return None, "empty"
  return text, "ok"
