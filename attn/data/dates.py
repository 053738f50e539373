"""Human-readable dates -> ISO 8601, character level (the classic attention-alignment demo).

Inputs are one of :data:`FORMATS` ("3rd of March 2021", "03/03/21", "Wednesday, March 3,
2021", ...; weekday names are those of the date); the target is "2021-03-03". Dates span 100
years from ``start_year``, so two-digit years are unambiguous; slashes are always US
month/day order, dots day.month. Evaluation is honest: the dates are split into disjoint
pools, so no validation or test date (in any format) appears in training.

Records: ``inputs`` uint8 ``[<= 40]`` and ``targets`` uint8 ``[11]`` (ISO date + eos) token
ids, plus ``input_text``, ``target_text`` and ``format`` (index into :data:`FORMATS`).
"""

from __future__ import annotations

import dataclasses
import datetime
import random
import string
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from attn.data.builder import GeneratedBuilder, SizedConfig, split_seed, token_feature
from attn.data.tokenizers import SymbolTokenizer

__all__ = [
    "FORMATS",
    "INPUT_LENGTH",
    "TARGET_LENGTH",
    "AttnDates",
    "DatesConfig",
    "date_input_tokenizer",
    "date_target_tokenizer",
    "format_date",
]

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

INPUT_LENGTH = 40  # longest input: "Wednesday the 23rd of September, 2021" (37 characters)
TARGET_LENGTH = 11  # "2021-03-03" + eos


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _fields(d: datetime.date) -> dict[str, str]:
    # Built by hand, not strftime: locale-independent, and no platform-specific %-d.
    month, weekday = _MONTHS[d.month - 1], _WEEKDAYS[d.weekday()]
    return {
        "d": str(d.day),
        "dd": f"{d.day:02d}",
        "dth": _ordinal(d.day),
        "m": str(d.month),
        "mm": f"{d.month:02d}",
        "Month": month,
        "Mon": month[:3],
        "Y": f"{d.year:04d}",
        "yy": f"{d.year % 100:02d}",
        "Weekday": weekday,
        "Wkd": weekday[:3],
    }


_TEMPLATES = (
    "{dth} of {Month} {Y}",
    "{mm}/{dd}/{yy}",
    "{Weekday}, {Month} {d}, {Y}",
    "{d} {Mon} {Y}",
    "{Month} {dth}, {Y}",
    "{Y}.{mm}.{dd}",
    "{Wkd}, {dd} {Mon} {Y}",
    "{d}.{m}.{Y}",
    "{dd}-{Mon}-{Y}",
    "{m}/{d}/{Y}",
    "{Weekday} the {dth} of {Month}, {Y}",
    "{Y}{mm}{dd}",
    "{Mon} {d}, '{yy}",
)


def _template_format(template: str, case: Callable[[str], str]) -> Callable[[datetime.date], str]:
    return lambda d: case(template.format(**_fields(d)))


# One function per format; the all-lower and all-upper variants keep capitalization from
# being a cue the model must rely on.
FORMATS: tuple[Callable[[datetime.date], str], ...] = (
    *(_template_format(t, str) for t in _TEMPLATES),
    _template_format("{Weekday} {dth} {Month} {Y}", str.lower),
    _template_format("{Month} {d}, {Y}", str.upper),
    _template_format("{d} {Mon} {yy}", str.lower),
)

_ALPHABET = string.digits + string.ascii_letters + " ,./-'"


def format_date(d: datetime.date, format_index: int) -> str:
    """``d`` written in ``FORMATS[format_index]``."""
    return FORMATS[format_index](d)


def date_input_tokenizer() -> SymbolTokenizer:
    """Characters: digits, ASCII letters and `` ,./-'``."""
    return SymbolTokenizer(_ALPHABET, separator="")


def date_target_tokenizer() -> SymbolTokenizer:
    """Characters of an ISO date: digits and ``-``."""
    return SymbolTokenizer(string.digits + "-", separator="")


@dataclasses.dataclass(eq=False)
class DatesConfig(SizedConfig):
    """Sizes; ``holdout_fraction`` of all dates is reserved for validation, and again for test."""

    num_train: int = 50_000
    num_validation: int = 2_000
    num_test: int = 2_000
    start_year: int = 1950
    holdout_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.start_year <= 9900:
            raise ValueError(f"start_year must be in [1, 9900], got {self.start_year}")
        if not 0 < self.holdout_fraction < 0.5:
            raise ValueError(f"holdout_fraction must be in (0, 0.5), got {self.holdout_fraction}")
        super().__post_init__()


def date_pools(config: DatesConfig) -> dict[str, list[datetime.date]]:
    """Disjoint date pools per split, from the 100 years starting at ``start_year``."""
    first = datetime.date(config.start_year, 1, 1)
    last = datetime.date(config.start_year + 99, 12, 31)
    dates = [first + datetime.timedelta(days=i) for i in range((last - first).days + 1)]
    random.Random(config.data_seed).shuffle(dates)
    held = round(len(dates) * config.holdout_fraction)
    return {"test": dates[:held], "validation": dates[held : 2 * held], "train": dates[2 * held :]}


class AttnDates(GeneratedBuilder):
    """The date-translation dataset builder."""

    BUILDER_CONFIGS = [DatesConfig()]  # noqa: RUF012  (tfds reads this class attribute)

    def features(self) -> dict[str, Any]:
        return {
            "inputs": token_feature(),
            "targets": token_feature(),
            "input_text": tfds.features.Text(),
            "target_text": tfds.features.Text(),
            "format": tfds.features.Scalar(dtype=np.int32),
        }

    def generate(self, split: str) -> Iterator[dict[str, Any]]:
        config = self.builder_config
        pool = date_pools(config)[split]
        # A string seed is hashed with SHA-512: stable across Python versions and platforms.
        rng = random.Random(f"dates/{split_seed(config.data_seed, split)}")
        input_tokenizer, target_tokenizer = date_input_tokenizer(), date_target_tokenizer()
        order: list[datetime.date] = []
        for _ in range(config.num_examples(split)):
            if not order:  # Walk the pool in a fresh random order, so dates repeat evenly.
                order = rng.sample(pool, len(pool))
            d = order.pop()
            format_index = rng.randrange(len(FORMATS))
            text, iso = format_date(d, format_index), d.isoformat()
            if len(text) > INPUT_LENGTH:
                raise RuntimeError(f"date input {text!r} longer than {INPUT_LENGTH}")
            yield {
                "inputs": np.array(input_tokenizer.encode(text), dtype=np.uint8),
                "targets": np.array(target_tokenizer.encode(iso, add_eos=True), dtype=np.uint8),
                "input_text": text,
                "target_text": iso,
                "format": format_index,
            }
