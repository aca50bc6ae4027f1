"""The options every run command shares (boost, config, doctor, validate, plan, slurm, sweep cells)
and the RunConfig they build. Every config key is a flag, made from the schema (llm2llm/config.py)
the way TRL's HfArgumentParser does it: `--teacher-per-wrong 6` is `--set teacher.per_wrong=6`, its
help is the field's description, a Literal's values are its choices. The keys used most have a
short flag instead (SHORT). Precedence: the profile, then flags, then --set."""

from __future__ import annotations

import types
import typing
from typing import Literal, get_args, get_origin

import click
import yaml

from llm2llm.config import DEFAULT_PROFILE, RunConfig, config_keys, deep_merge, parse_set_option, resolve_config

# The short flags of the keys used most (config path -> flag); every other key's flag is its path.
SHORT = {
    "data.dataset": "--dataset",
    "data.data_dir": "--data-dir",
    "data.seed_size": "--seed-size",
    "loop.method": "--method",
    "loop.iterations": "--iterations",
    "data.rng_seed": "--rng-seed",
    "student.model": "--student",
    "teacher.model": "--teacher",
    "train.deepspeed": "--deepspeed",
    "plan.mode": "--mode",
    "plan.nodes": "--nodes",
    "run": "--run",
    "runs_dir": "--runs-dir",
}
NOT_FLAGS = {"profile"}  # --profile names the profile to start from; the config records it
# Old spellings still accepted, each with a one-line deprecation message: flag -> (config path, message).
DEPRECATED = {
    "--seed": (
        "data.rng_seed",
        "--seed is deprecated: it is the RNG seed, now --rng-seed (--seed-size is the number of seed examples)",
    ),
}


class YAMLValue(click.ParamType):
    """A value read as YAML, as --set reads it (a list, a number, null)."""

    name = "yaml"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return yaml.safe_load(value) if value else ""
        except yaml.YAMLError as e:
            self.fail(f"{value!r} is not a YAML value ({e.problem})", param, ctx)


def flag(path: str) -> str:
    """A config key's flag: its short one, else its path with dashes (teacher.per_wrong -> --teacher-per-wrong)."""
    return SHORT.get(path) or "--" + path.replace(".", "-").replace("_", "-")


def param_type(annotation) -> click.ParamType | type:
    """The click type of a field: a Literal's choices, bool, int, float, str; X | None as X (None only
    through --set); anything else (a list) as YAML."""
    origin = get_origin(annotation)
    if origin is Literal:
        return click.Choice([str(v) for v in get_args(annotation)])
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        return param_type(rest[0]) if len(rest) == 1 else YAMLValue()
    return {bool: click.BOOL, int: int, float: float, str: str}.get(annotation, YAMLValue())


def _help(path: str, field) -> str:
    text = field.description or ""
    return f"Student: {text}" if path == "student.model" else f"Teacher: {text}" if path == "teacher.model" else text


def _option_list() -> list[tuple[str, str, object, str]]:
    """(flag, config path, click type, help) per key: the short flags first, then the rest in schema order."""
    keys = [(path, field) for path, field in config_keys() if path not in NOT_FLAGS]
    order = sorted(keys, key=lambda k: (k[0] not in SHORT, list(SHORT).index(k[0]) if k[0] in SHORT else 0))
    return [(flag(path), path, param_type(field.annotation), _help(path, field)) for path, field in order]


RUN_OPTIONS = _option_list()


def run_options(func):
    for option, path, kind, text in reversed(RUN_OPTIONS):
        func = click.option(option, path.replace(".", "__"), type=kind, default=None, help=text)(func)
    for option, (path, message) in DEPRECATED.items():
        func = click.option(
            option, "deprecated_" + option.lstrip("-"), type=param_type(int), default=None, hidden=True
        )(func)
    func = click.option(
        "--engine",
        type=click.Choice(["transformers", "vllm"]),
        default=None,
        help="Engine for both student evaluation and the teacher (sets student.engine and "
        "teacher.engine; --set teacher.engine=vllm-server|openai for a server).",
    )(func)
    func = click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override any config key, e.g. --set train.epochs=3 (see `llm2llm config --explain`).",
    )(func)
    func = click.option(
        "--profile",
        default=DEFAULT_PROFILE,
        show_default=True,
        help="Run profile: a name from configs/profiles/ or a YAML path.",
    )(func)
    return func


def modern(options: dict, warn: bool = False) -> dict:
    """The options with old spellings' values moved to their keys (with warn, each says its message on
    stderr once)."""
    options = dict(options)
    for option, (path, message) in DEPRECATED.items():
        value = options.pop("deprecated_" + option.lstrip("-"), None)
        if value is not None:
            if warn:
                click.echo(f"warning: {message}", err=True)
            if options.get(path.replace(".", "__")) is None:  # the new spelling wins where both are given
                options[path.replace(".", "__")] = value
    return options


def build_config(profile: str, sets: tuple[str, ...], engine: str | None = None, **options) -> RunConfig:
    overrides: dict = {"student": {"engine": engine}, "teacher": {"engine": engine}} if engine else {}
    for key, value in modern(options, warn=True).items():
        if value is None:
            continue
        node = overrides
        *parents, leaf = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    for item in sets:
        overrides = deep_merge(overrides, parse_set_option(item))
    return resolve_config(profile, overrides)
