"""The options every run command shares (boost, config, doctor, validate, plan, slurm, sweep cells)
and the RunConfig they build. Option help comes from the config field descriptions (llm2llm/config.py)."""

from __future__ import annotations

import click

from llm2llm.config import DEFAULT_PROFILE, RunConfig, deep_merge, parse_set_option, resolve_config


def _help(section: str, name: str) -> str:
    model = RunConfig.model_fields[section].annotation if section else RunConfig
    return model.model_fields[name].description or ""


# (option, config path, type, help)
RUN_OPTIONS = [
    ("--dataset", "data.dataset", str, _help("data", "dataset")),
    ("--data-dir", "data.data_dir", str, _help("data", "data_dir")),
    ("--seed-size", "data.seed_size", float, _help("data", "seed_size")),
    (
        "--method",
        "loop.method",
        click.Choice(["llm2llm", "plain", "one-shot", "auggpt", "eda"]),
        _help("loop", "method"),
    ),
    ("--iterations", "loop.iterations", int, _help("loop", "iterations")),
    ("--seed", "data.seed", int, _help("data", "seed")),
    ("--student", "student.model", str, "Student: " + _help("student", "model")),
    ("--teacher", "teacher.model", str, "Teacher: " + _help("teacher", "model")),
    ("--deepspeed", "train.deepspeed", str, _help("train", "deepspeed")),
    ("--mode", "plan.mode", click.Choice(["auto", "sequential", "split"]), _help("plan", "mode")),
    ("--nodes", "plan.nodes", int, _help("plan", "nodes")),
    ("--run", "run", str, _help("", "run")),
    ("--runs-dir", "runs_dir", str, _help("", "runs_dir")),
]


def run_options(func):
    for flag, path, kind, text in reversed(RUN_OPTIONS):
        func = click.option(flag, path.replace(".", "__"), type=kind, default=None, help=text)(func)
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


def build_config(profile: str, sets: tuple[str, ...], engine: str | None = None, **options) -> RunConfig:
    overrides: dict = {"student": {"engine": engine}, "teacher": {"engine": engine}} if engine else {}
    for key, value in options.items():
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
