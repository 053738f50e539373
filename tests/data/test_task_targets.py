"""Each task's targets are right, checked by code independent of the generators."""

from __future__ import annotations

import calendar
import datetime
import re

import numpy as np
import pytest

from attn.data import dates

from .conftest import SIZES, TINY

SPLIT_SIZES = {"train": SIZES["num_train"], "validation": SIZES["num_validation"], "test": 23}


def _all(task, split):
    return task._read(split, range(task.num_examples(split)))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("reverse", lambda x: x[::-1]), ("copy", lambda x: x), ("sort", sorted)],
)
def test_sequence_targets(tiny_task, name, expected):
    task = tiny_task(name)
    for split in task.split_names:
        batch = _all(task, split)
        assert np.all(batch["weights"] == 1)
        symbols = batch["inputs"] - 3
        assert symbols.min() >= 0 and symbols.max() < TINY[name]["num_symbols"]
        for x, y in zip(batch["inputs"], batch["targets"], strict=True):
            assert list(y) == list(expected(list(x)))
    text = task.tokenizer.decode(task.example("train", 0)["inputs"])
    assert len(text.split()) == TINY[name]["length"]


def test_mqar_answers(tiny_task):
    task = tiny_task("mqar")
    num_keys = (TINY["mqar"]["vocab_size"] - 3) // 2
    is_key = lambda t: 3 <= t < 3 + num_keys  # noqa: E731
    is_value = lambda t: 3 + num_keys <= t < TINY["mqar"]["vocab_size"]  # noqa: E731
    low, high = TINY["mqar"]["num_kv_pairs"]
    counts = set()
    for split in task.split_names:
        batch = _all(task, split)
        # An LM: the targets are the inputs shifted by one.
        np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
        for inputs, targets, weights in zip(*batch.values(), strict=True):
            n = int(weights.sum())
            counts.add(n)
            assert low <= n <= high
            context_keys, context_values = list(inputs[0 : 2 * n : 2]), list(inputs[1 : 2 * n : 2])
            assert all(map(is_key, context_keys)) and all(map(is_value, context_values))
            assert len(set(context_keys)) == n and len(set(context_values)) == n
            answer = dict(zip(context_keys, context_values, strict=True))
            queries = np.flatnonzero(weights)
            assert queries.min() >= 2 * n  # every query comes after all the pairs
            assert sorted(inputs[queries]) == sorted(context_keys)  # each key queried once
            for position in queries:
                assert targets[position] == answer[inputs[position]]
    assert len(counts) > 1  # n varies across examples


# Independent parsing: strptime patterns (case-insensitive) after removing ordinal suffixes.
_PATTERNS = [
    "%d of %B %Y", "%m/%d/%y", "%A, %B %d, %Y", "%d %b %Y", "%B %d, %Y", "%Y.%m.%d",
    "%a, %d %b %Y", "%d.%m.%Y", "%d-%b-%Y", "%m/%d/%Y", "%A the %d of %B, %Y", "%Y%m%d",
    "%b %d, '%y", "%A %d %B %Y", "%d %b %y",
]  # fmt: skip
_WEEKDAY_WORDS = {name.lower(): i for i, name in enumerate(calendar.day_name)} | {
    name.lower(): i for i, name in enumerate(calendar.day_abbr)
}


def _parse(text: str, start_year: int = 1950) -> set[datetime.date]:
    for number, suffix in re.findall(r"\b(\d+)(st|nd|rd|th)\b", text):
        n = int(number)
        right = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        assert suffix == right, text
    plain = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", r"\1", text)
    found = set()
    for pattern in _PATTERNS:
        try:
            parsed = datetime.datetime.strptime(plain, pattern).date()
        except ValueError:
            continue
        if "%y" in pattern:  # two-digit years name the 100 years from start_year
            year = start_year + (parsed.year % 100 - start_year % 100) % 100
            parsed = parsed.replace(year=year)
        found.add(parsed)
    return found


def test_dates_inputs_name_exactly_their_target(tiny_task):
    task = tiny_task("dates", num_train=400)
    formats_seen = set()
    for split in task.split_names:
        source = task.splits[split]
        for i in range(len(source)):
            record = source[i]
            text, iso = record["input_text"].decode(), record["target_text"].decode()
            target = datetime.date.fromisoformat(iso)
            assert _parse(text) == {target}, text  # parses, and to this date only
            for word in re.findall(r"[A-Za-z]+", text):
                if word.lower() in _WEEKDAY_WORDS:
                    assert _WEEKDAY_WORDS[word.lower()] == target.weekday(), text
            assert task.tokenizer.decode(record["inputs"]) == text
            assert task.target_tokenizer.decode(record["targets"]) == iso
            assert record["targets"][-1] == 2  # eos
            formats_seen.add(int(record["format"]))
    assert formats_seen == set(range(len(dates.FORMATS)))


def test_dates_held_out_by_date(tiny_task):
    task = tiny_task("dates", num_train=400)
    used = {
        split: {task.splits[split][i]["target_text"] for i in range(task.num_examples(split))}
        for split in task.split_names
    }
    assert not used["train"] & used["test"] and not used["train"] & used["validation"]
    assert not used["validation"] & used["test"]
    pools = dates.date_pools(dates.DatesConfig())
    assert sum(map(len, pools.values())) == 36525  # 1950..2049, every day once
    assert not set(pools["train"]) & (set(pools["test"]) | set(pools["validation"]))
    assert len(pools["test"]) == len(pools["validation"]) == 3652


def test_longest_date_fits_the_input_length():
    longest = max(
        len(dates.format_date(datetime.date(2021, 9, 23) + datetime.timedelta(days), f))
        for f in range(len(dates.FORMATS))
        for days in range(7)  # every weekday name
    )
    assert longest == 37 <= dates.INPUT_LENGTH


def _listops_value(expression: str) -> int:
    """A stack evaluator of prefix ListOps (space-separated tokens), written for this test."""
    stack: list[tuple[str, list[int]]] = [("ROOT", [])]
    for token in expression.split():
        if token.startswith("["):
            stack.append((token, []))
        elif token == "]":
            operator, args = stack.pop()
            value = {
                "[MIN": min,
                "[MAX": max,
                "[MED": lambda a: int(np.median(a)),
                "[SM": lambda a: sum(a) % 10,
            }[operator](args)
            stack[-1][1].append(value)
        else:
            stack[-1][1].append(int(token))
    [(_, [value])] = stack  # exactly one value at the top level
    return value


def test_listops_labels_lengths_and_disjoint_splits(tiny_task):
    task = tiny_task("listops")
    config = TINY["listops"]
    seen = set()
    for split in task.split_names:
        batch = _all(task, split)
        for inputs, label in zip(batch["inputs"], batch["targets"], strict=True):
            tokens = task.tokenizer.decode(inputs).split()
            assert config["min_length"] < len(tokens) < config["max_length"]
            assert label == _listops_value(" ".join(tokens)), " ".join(tokens)
            assert tuple(tokens) not in seen  # no duplicates, within or across splits
            seen.add(tuple(tokens))
    assert len(seen) == sum(SPLIT_SIZES.values())


def test_listops_evaluator_on_known_expressions():
    assert _listops_value("[MAX 2 9 [MIN 4 7 ] 0 ]") == 9
    assert _listops_value("[MED 1 2 3 8 ]") == 2  # median 2.5 -> 2, as in LRA
    assert _listops_value("[SM 5 [MAX 8 1 ] ]") == 3
