"""The name -> component tables that configs use, and the parser for component specs.

A spec is a catalog name, a call with literal arguments, or an import string:

    get("weighting", "entmax15")
    get("score", "cosine(temperature=0.05)")
    get("mask", "causal() & sliding_window(left=64)")      # masks combine with & | ~
    get("weighting", "my_pkg.my_mod:my_weighting")           # a user's own function
    get("attention", "performer(num_features=128)")          # replaces attend's composition

Scores and weightings come back as functions (keyword arguments bound with ``partial``); masks
come back as :class:`attn.masks.Mask` objects and attention variants as configured objects
(their factories are called). Arguments are bound against the function's signature when the
spec is resolved, so a misspelt or misplaced argument fails when a config is read, not when the
model is traced: scores and weightings take keyword arguments only (their positional
parameters are the call's inputs, logits or queries), factories take their own parameters.
Every such error is a ``ValueError`` that names the spec.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import operator
from collections.abc import Callable
from typing import Any

from attn import masks, scores, variants, weighting

__all__ = ["KINDS", "bound_arguments", "get", "names", "with_arguments"]

_TABLES: dict[str, dict[str, Callable[..., Any]]] = {
    "score": {
        "dot": scores.dot,
        "scaled_dot": scores.scaled_dot,
        "general": scores.general,
        "additive": scores.additive,
        "cosine": scores.cosine,
    },
    "weighting": {
        "softmax": weighting.softmax,
        "softmax_with_sink": weighting.softmax_with_sink,
        "sparsemax": weighting.sparsemax,
        "entmax15": weighting.entmax15,
        "sigmoid": weighting.sigmoid,
        "relu": weighting.relu,
        "squared_relu": weighting.squared_relu,
    },
    "mask": {
        "causal": masks.causal,
        "sliding_window": masks.sliding_window,
        "chunked": masks.chunked,
        "strided": masks.strided,
        "global_tokens": masks.global_tokens,
        "prefix_lm": masks.prefix_lm,
        "random_blocks": masks.random_blocks,
    },
    # Whole-attention variants that replace attend's composition (attn.nn.MultiHeadAttention's
    # ``attention=``); a spec builds one: variant(q, k, v, *, mask) -> out.
    "attention": {
        "linear": variants.Linear,
        "performer": variants.Performer,
        "linformer": variants.Linformer,
    },
}
# Tables whose entries need flax or tensorflow-datasets: imported on first use, so that
# `import attn` stays jax-only. Their entries are classes and specs, returned as they are.
_LAZY_TABLES = {"dataset": "attn.data.datasets:DATASETS", "model": "attn.models:MODELS"}
# Kinds whose entries are factories: a spec calls them. Others bind arguments with partial.
_FACTORY_KINDS = frozenset({"mask", "attention"})
_MASK_OPERATORS = {ast.BitAnd: operator.and_, ast.BitOr: operator.or_}

KINDS = (*_TABLES, *_LAZY_TABLES)


def names(kind: str) -> list[str]:
    """The catalog names of one kind."""
    return sorted(_table(kind))


def _table(kind: str) -> dict[str, Callable[..., Any]]:
    if kind not in KINDS:
        raise ValueError(f"unknown catalog kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if kind not in _TABLES:
        _TABLES[kind] = dict(_import_string(_LAZY_TABLES[kind]))
    return _TABLES[kind]


def _import_string(spec: str) -> Callable[..., Any]:
    module_name, _, attribute = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import {spec!r} ('package.module:function'): {error}") from None


def _literal(node: ast.expr, spec: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(
            f"in {spec!r}: arguments must be literals (numbers, strings, lists), got "
            f"{ast.unparse(node)!r}"
        ) from None


def _build(kind: str, node: ast.expr, spec: str) -> Any:
    table = _table(kind)
    if kind == "mask" and isinstance(node, ast.BinOp) and type(node.op) in _MASK_OPERATORS:
        combine = _MASK_OPERATORS[type(node.op)]
        return combine(_build(kind, node.left, spec), _build(kind, node.right, spec))
    if kind == "mask" and isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
        return ~_build(kind, node.operand, spec)
    call = node if isinstance(node, ast.Call) else None
    name_node = call.func if call else node
    if not isinstance(name_node, ast.Name):
        raise ValueError(f"cannot read {kind} spec {spec!r}; expected name or name(arg=value, ...)")
    if name_node.id not in table:
        raise ValueError(
            f"unknown {kind} {name_node.id!r}; valid {kind} names: {', '.join(names(kind))} "
            f"(or 'package.module:function')"
        )
    fn = table[name_node.id]
    args = [_literal(a, spec) for a in call.args] if call else []
    kwargs = {kw.arg: _literal(kw.value, spec) for kw in call.keywords} if call else {}
    if kind in _LAZY_TABLES:
        if args or kwargs:
            raise ValueError(
                f"{kind} specs take no arguments here; set them in the config: {spec!r}"
            )
        return fn
    return _bind(kind, name_node.id, fn, args, kwargs, spec)


def _settable(signature: inspect.Signature, factory: bool) -> list[str] | None:
    """The parameters a spec may set (``None``: any, the function takes ``**kwargs``). A
    factory's are all of its own; a bound function's only the keyword-only ones, because its
    positional parameters are the inputs it is later called with."""
    kinds = [inspect.Parameter.KEYWORD_ONLY]
    if factory:
        kinds.append(inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind in kinds]


def _bind(
    kind: str,
    name: str,
    fn: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
    spec: str,
) -> Any:
    """``fn`` with the spec's arguments: called (factories) or bound with ``partial``."""
    factory = kind in _FACTORY_KINDS
    where = f"in {kind} spec {spec!r}"
    if args and not factory:
        raise ValueError(
            f"{where}: arguments must be keyword arguments (name=value); a positional one "
            f"would bind {name}'s own inputs"
        )
    settable = _settable(inspect.signature(fn), factory)
    unknown = [key for key in kwargs if settable is not None and key not in settable]
    if unknown:
        raise ValueError(
            f"{where}: unknown argument {unknown[0]!r}; {name} takes "
            f"{', '.join(settable) if settable else 'no arguments'}"
        )
    if not factory:
        return functools.partial(fn, **kwargs) if kwargs else fn
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError) as error:  # missing or bad values, as the factory says
        raise ValueError(f"{where}: {error}") from error


def get(kind: str, spec: str | Callable[..., Any]) -> Any:
    """Resolve ``spec`` (a name, ``"name(arg=value)"``, or ``"pkg.mod:fn"``) in table ``kind``.

    A callable is returned unchanged, so configs and code can pass either.
    """
    if callable(spec) or isinstance(spec, masks.Mask):
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            f"{kind} must be a catalog spec (a string) or a callable, got "
            f"{type(spec).__name__} {spec!r}"
        )
    _table(kind)
    if ":" in spec:
        return _import_string(spec.strip())
    try:
        node = ast.parse(spec.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"cannot parse {kind} spec {spec!r}") from None
    return _build(kind, node, spec)


def bound_arguments(kind: str, spec: Any) -> tuple[str, dict[str, Any]] | None:
    """``("softmax", {"temperature": 2.0})`` for a score or weighting spec
    ``"softmax(temperature=2.0)"`` (a name from the table with keyword literals); None for any
    other spec (callables, imports, masks and other factories)."""
    if kind not in _TABLES or kind in _FACTORY_KINDS or not isinstance(spec, str):
        return None
    try:
        node = ast.parse(spec.strip(), mode="eval").body
    except SyntaxError:
        return None
    call = node if isinstance(node, ast.Call) else None
    name_node = call.func if call else node
    if not isinstance(name_node, ast.Name) or name_node.id not in _table(kind):
        return None
    if call and call.args:
        return None
    return name_node.id, {kw.arg: _literal(kw.value, spec) for kw in call.keywords} if call else {}


def with_arguments(kind: str, name: str, arguments: dict[str, Any]) -> Callable[..., Any]:
    """The score or weighting ``name`` with ``arguments`` bound, which may be traced arrays
    (e.g. a temperature vmapped over a sweep's trials); the names were checked when the spec
    was first resolved."""
    fn = _table(kind)[name]
    return functools.partial(fn, **arguments) if arguments else fn
