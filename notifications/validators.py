"""Checks of announcement texts shared by the REST endpoint and the Django admin form."""

from __future__ import annotations

import unicodedata

from django.core.exceptions import ValidationError

from notifications.models import BODY_MAX_LENGTH, TITLE_MAX_LENGTH


def _printable(value: str, *, multiline: bool) -> None:
    # Control characters would reach every client's screen (and NUL cannot be stored);
    # lone surrogates cannot be encoded at all.
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs" or (category == "Cc" and not (multiline and char in "\n\t")):
            raise ValidationError(
                f"Contains a control or unencodable character (U+{ord(char):04X}).",
                code="invalid_character",
            )


def title_validator(value: str) -> None:
    """One line of printable text, at most TITLE_MAX_LENGTH characters."""
    if len(value) > TITLE_MAX_LENGTH:
        raise ValidationError(f"At most {TITLE_MAX_LENGTH} characters.", code="max_length")
    _printable(value, multiline=False)


def body_validator(value: str) -> None:
    """Printable text (line breaks and tabs allowed), at most BODY_MAX_LENGTH characters."""
    if len(value) > BODY_MAX_LENGTH:
        raise ValidationError(f"At most {BODY_MAX_LENGTH} characters.", code="max_length")
    _printable(value, multiline=True)
