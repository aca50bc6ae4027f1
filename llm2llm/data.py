"""Loading a task's splits from local files, validating every row, and drawing the seed.

Files are read through HF `datasets` (JSONL, JSON, CSV, parquet, or a folder written by
`save_to_disk`). Rows are checked against the task and a bad row is reported with its file,
line (or row) and field.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from llm2llm.config import CONFIG_DIR, REPO_ROOT, DataConfig, Section, load_yaml
from llm2llm.errors import UserError
from llm2llm.tasks import DEFAULT_TEMPLATES, NOTES, TASK_TYPES, Task

TASK_SPEC_DIR = CONFIG_DIR / "tasks"
READERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
MAX_FIELD_CHARS = 100_000  # far above any prompt that fits a context; a longer cell is a broken file


class HoldoutSpec(Section):
    test_fraction: float = Field(0.5, gt=0, lt=1)
    seed: int = 0


class DataFilesSpec(Section):
    folder: str = "."
    train: str = "train.jsonl"
    test: str = "test.jsonl"
    file: str | None = None
    holdout: HoldoutSpec | None = None
    validation: str | None = Field(
        None, description="A validation split's file in the folder (e.g. validation.jsonl)."
    )
    validation_from_train: int | None = Field(
        None,
        ge=1,
        description="No validation file: hold out this many train examples (a fixed draw, seed 0) as validation; the "
        "seed is never drawn from them.",
    )


class TaskSpec(Section):
    """A task spec YAML (docs/data-format.md). Unknown keys and values of the wrong type are errors."""

    name: str | None = None
    type: Literal["classification", "numeric", "multiple_choice", "free_text"]
    data: DataFilesSpec = Field(default_factory=DataFilesSpec)
    fields: dict[str, str] = {}
    labels: list[bool | str | int] | None = Field(None, min_length=2)
    label_names: dict[str | int, bool | str] | None = Field(
        None,
        description="Words for labels stored as codes (e.g. {0: negative, 1: positive}): the student and teacher read "
        "and write the words; `labels`, if given, may list either.",
    )
    templates: dict[str, str] = {}
    num_choices: int | None = Field(None, ge=2, le=26)
    match: Literal["normalised", "exact"] | None = None
    min_generated_words: int | None = Field(None, ge=1)
    max_answer_tokens: int | None = Field(None, ge=1)
    generated_text: list[Literal["lowercase", "strip_punctuation", "space_punctuation"]] = Field(
        [],
        description="Steps that bring a teacher-written text to the data's surface style, in order (classification).",
    )
    seed_eval: dict | None = Field(
        None,
        description="How this task's seed examples are judged (the seed_eval keys), over the profile's and under "
        "--set: e.g. long reasoning answers need a lower temperature than a label.",
    )
    teacher: dict | None = Field(
        None,
        description="Teacher keys for this task, over the profile's and under --set: e.g. a task the profile's "
        "request options were not chosen on turns them off.",
    )

    @model_validator(mode="after")
    def _no_yaml_booleans(self):
        """YAML 1.1 reads yes/no/on/off/true/false as booleans: a label named `no` would become False."""
        found = [("labels", value) for value in self.labels or [] if isinstance(value, bool)]
        found += [
            (f"label_names.{key}", value) for key, value in (self.label_names or {}).items() if isinstance(value, bool)
        ]
        if found:
            where, value = found[0]
            raise ValueError(
                f"{where}: YAML read a label as the boolean {value} (it does so for yes/no/on/off/true/false); "
                f'put the label in quotes, e.g. "no"'
            )
        return self

    @model_validator(mode="after")
    def _keys_fit_the_type(self):
        canonical = TASK_TYPES[self.type].canonical_fields
        for key in self.fields:
            if key not in canonical:
                raise ValueError(
                    f"fields.{key} is not a field of a {self.type} task (its fields: {', '.join(canonical)})"
                )
        for key, template in self.templates.items():
            known = [*DEFAULT_TEMPLATES[self.type], *NOTES]
            if key not in known:
                raise ValueError(f"templates.{key} is not a {self.type} template (known: {', '.join(known)})")
            allowed = _placeholders(DEFAULT_TEMPLATES[self.type][key])
            try:
                used = _placeholders(template)
            except ValueError as e:
                raise ValueError(
                    f"templates.{key} is not a valid format string ({e}); write literal braces as {{{{ }}}}"
                ) from None
            if not used <= allowed:
                raise ValueError(
                    f"templates.{key} uses {', '.join(sorted('{' + u + '}' for u in used - allowed))}; "
                    f"its placeholders are {', '.join(sorted('{' + a + '}' for a in allowed))}"
                )
        if self.data.holdout and not self.data.file:
            raise ValueError("data.holdout splits one file: give data.file too")
        return self


def _placeholders(template: str) -> set[str]:
    """The names a format string fills in ({text}, {text.upper} -> text); ValueError if it does not parse."""
    import re
    import string

    return {re.split(r"[.\[]", field)[0] for _, field, _, _ in string.Formatter().parse(template) if field is not None}


def load_spec(path: Path) -> dict:
    try:
        spec = TaskSpec.model_validate(load_yaml(path))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise UserError(f"{path}: unknown key '{where}'; the spec keys are in docs/data-format.md") from None
        message = first["msg"].removeprefix("Value error, ")
        raise UserError(
            f"{path}: {where + ': ' if where else ''}{message}; fix the spec (docs/data-format.md)"
        ) from None
    values = spec.model_dump(exclude_none=True)
    names = {_label_text(k): v for k, v in (spec.label_names or {}).items()}
    if spec.label_names:
        values["label_names"] = names
    if spec.labels:
        values["labels"] = [names.get(_label_text(label), _label_text(label)) for label in spec.labels]
    return values


def _label_text(value) -> str:
    """A label as text: 1 and 1.0 (a CSV read as floats, a parquet column) and "1" are one label."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def numeric_labels_problem(labels: list[str], spec_path: Path) -> str | None:
    """Labels that are all numbers give the student and teacher no word to learn or write."""
    if labels and all(re.fullmatch(r"-?\d+(\.\d+)?", label) for label in labels):
        shown = ", ".join(labels[:4]) + (", ..." if len(labels) > 4 else "")
        pairs = ", ".join(f"{label}: <word>" for label in labels[:2])
        return (
            f"{spec_path}: the labels ({shown}) are numbers, which the student cannot learn as classes nor the "
            f"teacher write examples for; name them in the spec, e.g. label_names: {{{pairs}}} (docs/data-format.md)"
        )
    return None


@dataclass
class TaskData:
    task: Task
    train: list[dict]
    test: list[dict]
    notes: list[str]  # said in the report (e.g. how a split was made)
    validation: list[dict] = field(default_factory=list)  # for choosing recipes and iterations; never the test split


def default_data_dir() -> Path:
    env = os.environ.get("LLM2LLM_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "datasets"


def builtin_tasks() -> list[str]:
    return sorted(p.stem for p in TASK_SPEC_DIR.glob("*.yaml"))


def find_spec(dataset: str) -> tuple[Path, bool]:
    """(spec path, is built-in)."""
    path = Path(dataset)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise UserError(
                f"task spec {path} does not exist; give a built-in task ({', '.join(builtin_tasks())}) or an "
                "existing spec file"
            )
        return path, False
    builtin = TASK_SPEC_DIR / f"{dataset}.yaml"
    if not builtin.exists():
        raise UserError(
            f"unknown dataset '{dataset}'; known: {', '.join(builtin_tasks())}, or a path to a task spec .yaml"
        )
    return builtin, True


def read_rows(path: Path) -> list[dict]:
    """All rows of one local data file or saved-dataset folder, as dicts."""
    import datasets

    datasets.disable_progress_bars()
    if not path.exists():
        raise UserError(f"data file {path} not found; check --data-dir / LLM2LLM_DATA_DIR (looked in {path.parent})")
    if path.is_file() and (path.stat().st_size == 0 or (path.stat().st_size < 4096 and not path.read_bytes().strip())):
        raise UserError(f"{path}: the split is empty; it needs at least one example")
    try:
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                raise UserError(
                    f"{path} holds several splits ({', '.join(loaded)}); point the spec at one split folder"
                )
            return loaded.to_list()
        reader = READERS.get(path.suffix.lower())
        if reader is None:
            raise UserError(
                f"{path}: unsupported file type '{path.suffix}'; use .jsonl, .json, .csv, .parquet or a saved "
                "dataset folder"
            )
        if reader == "json":
            _check_json_lines(path)
        if reader == "csv":
            # Every cell as text (a label "1" stays "1"; an empty cell is "", not NaN), stray
            # whitespace around cells and header names dropped. Quotes, CRLF and quoted line breaks: pandas.
            import pandas

            try:
                rows = pandas.read_csv(
                    path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8"
                ).to_dict("records")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}: not UTF-8 text (byte {e.start}); re-save the file as UTF-8") from None
            return [{str(k).strip(): v.strip() if isinstance(v, str) else v for k, v in row.items()} for row in rows]
        if reader == "parquet":
            import pyarrow.parquet

            return pyarrow.parquet.read_table(path).to_pylist()
        return datasets.load_dataset(reader, data_files=str(path), split="train").to_list()
    except UserError:
        raise
    except Exception as e:  # pyarrow / datasets errors carry no line numbers; say what we know
        raise UserError(
            f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None


def _check_json_lines(path: Path) -> None:
    """Find the first malformed line ourselves: the arrow JSON reader does not say where it is."""
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if number == 1 and line.startswith("\ufeff"):  # what Windows editors and Excel often write
                    raise UserError(
                        f"{path}: starts with a UTF-8 byte-order mark, which JSON readers refuse; re-save it as UTF-8 "
                        f"without one (e.g. `sed -i '1s/^\\xEF\\xBB\\xBF//' {path}`)"
                    )
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    if number == 1 and path.suffix == ".json":
                        return  # a whole-file JSON array, not JSON Lines
                    raise UserError(
                        f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno}); fix or remove that line"
                    ) from None
                if not isinstance(row, dict):
                    raise UserError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); re-save the file as UTF-8") from None


def _to_canonical(task: Task, row: dict) -> dict:
    example = {name: row.get(task.source_field(name)) for name in task.canonical_fields}
    if task.type == "classification" and example.get("label") is not None:
        label = _label_text(example["label"]).strip()  # an int64 parquet column, a bool, a float, " billing ": text
        example["label"] = task.spec.get("label_names", {}).get(label, label)
    return example


def _validated(task: Task, rows: list[dict], path: Path) -> list[dict]:
    if not rows:
        raise UserError(f"{path}: the split is empty; it needs at least one example")
    unit = "line" if path.suffix in (".jsonl",) else "row"
    columns = {key for row in rows[:1000] for key in row}
    for name in task.canonical_fields:
        column = task.source_field(name)
        if name != "id" and column not in columns:
            raise UserError(
                f"{path}: no column '{column}' for the task's {name} (spec key fields.{name}); "
                f"the file's columns are: {', '.join(sorted(map(str, columns)))}"
            )
    examples, seen = [], {}
    for index, row in enumerate(rows):
        example = _to_canonical(task, row)
        where = f"{path}:{unit} {index + 1}" if unit == "row" else f"{path}:{index + 1}"
        if example.get("id") is None and task.source_field("id") not in row:
            example["id"] = f"{path.stem}-{index:06d}"  # data without ids get stable positional ids
        example["id"] = str(example["id"])
        for name, value in example.items():
            if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                raise UserError(
                    f"{where}: field '{task.source_field(name)}' is {len(value):,} characters long (the limit is "
                    f"{MAX_FIELD_CHARS:,}); is the line broken? Trim or split it"
                )
        problem = task.problem(example)
        if problem:
            raise UserError(f"{where}: {problem}")
        if example["id"] in seen:
            raise UserError(
                f"{where}: duplicate id {example['id']!r} (first at {unit} {seen[example['id']] + 1}); ids must be "
                "unique"
            )
        seen[example["id"]] = index
        examples.append(example)
    return examples


def load_task_data(config: DataConfig) -> TaskData:
    spec_path, builtin = find_spec(config.dataset)
    spec = load_spec(spec_path)
    task_type = spec["type"]
    data_spec = spec["data"]
    base = Path(config.data_dir) if config.data_dir else default_data_dir()
    if not builtin:
        base = spec_path.parent
    folder = base / data_spec.get("folder", ".")
    if not folder.exists():
        raise UserError(
            f"data folder {folder} not found for task '{spec.get('name', spec_path.stem)}'; "
            f"set --data-dir / LLM2LLM_DATA_DIR to the folder that holds it"
        )
    task = TASK_TYPES[task_type](name=spec.get("name", spec_path.stem), spec=spec)
    notes = []

    if data_spec.get("holdout"):
        path = folder / data_spec["file"]
        rows = read_rows(path)
        if task.type == "classification":
            task.labels = spec.get("labels") or sorted({str(_to_canonical(task, r)["label"]) for r in rows})
            if problem := numeric_labels_problem(task.labels, spec_path):
                raise UserError(problem)
        examples = _validated(task, rows, path)
        fraction = float(data_spec["holdout"].get("test_fraction", 0.5))
        order = sorted(examples, key=lambda e: e["id"])
        random.Random(data_spec["holdout"].get("seed", 0)).shuffle(order)
        cut = len(order) - int(round(len(order) * fraction))
        train, test = order[:cut], order[cut:]
        notes.append(
            f"{path.name} has no train split: it was split deterministically (seed "
            f"{data_spec['holdout'].get('seed', 0)}) into a seed pool of {len(train)} and a test part of {len(test)}."
        )
    else:
        train_path, test_path = (
            folder / data_spec.get("train", "train.jsonl"),
            folder / data_spec.get("test", "test.jsonl"),
        )
        train_rows, test_rows = read_rows(train_path), read_rows(test_path)
        if task.type == "classification":
            task.labels = spec.get("labels") or sorted({str(_to_canonical(task, r)["label"]) for r in train_rows})
            if problem := numeric_labels_problem(task.labels, spec_path):
                raise UserError(problem)
        train, test = _validated(task, train_rows, train_path), _validated(task, test_rows, test_path)
    validation = []
    if data_spec.get("validation"):
        path = folder / data_spec["validation"]
        validation = _validated(task, read_rows(path), path)
    elif data_spec.get("validation_from_train"):
        count = sample_count(len(train), data_spec["validation_from_train"])
        held = {ex["id"] for ex in random.Random(0).sample(sorted(train, key=lambda e: e["id"]), count)}
        validation = [ex for ex in train if ex["id"] in held]
        train = [ex for ex in train if ex["id"] not in held]
        notes.append(
            f"validation: {count} train examples held out (a fixed draw, seed 0); the seed is drawn from the other "
            f"{len(train)}."
        )
    return TaskData(task, train, test, notes, validation)


def sample_count(available: int, size: float) -> int:
    """How many examples a size (a count >= 1, or a fraction < 1) asks for; an error if there are not enough."""
    count = int(size) if size >= 1 else max(1, int(round(available * size)))
    if count > available:
        raise UserError(
            f"asked for {count} examples but the split has only {available}; lower data.seed_size / data.test_size"
        )
    return count


def check_sample_sizes(data: "TaskData", config) -> None:
    """Refuse, before anything runs, seed and test sizes the data cannot give (config: DataConfig): more
    than a split holds, fewer seed examples than a classification task has labels, or a stratified seed
    that asks a label for more examples than the train split has of it."""
    count = sample_count(len(data.train), config.seed_size)
    if config.test_size:
        sample_count(len(data.test), config.test_size)
    task = data.task
    if task.type != "classification":
        return
    if count < len(task.labels):
        raise UserError(
            f"data.seed_size {count} is fewer than the task's {len(task.labels)} labels: some label would have no "
            f"seed example to learn from or to be augmented; use at least {len(task.labels)}"
        )
    if config.stratified:
        sizes = Counter(ex["label"] for ex in data.train)
        per, extra = divmod(count, len(task.labels))
        for i, label in enumerate(sorted(sizes)):
            want = per + (1 if i < extra else 0)
            if sizes[label] < want:
                most = min(sizes[label] for label in sizes) * len(sizes)
                raise UserError(
                    f"data.seed_size {count} asks {want} seed examples of label '{label}', which has {sizes[label]} "
                    f"in the train split; use at most {most}, or data.stratified=false to draw without balancing"
                )


def by_stratum(examples: list[dict], task: Task) -> dict[str | None, list[dict]]:
    """The examples grouped by the task's stratum (a classification task's label), in order."""
    groups = defaultdict(list)
    for example in examples:
        groups[task.stratum(example)].append(example)
    return groups


def sample(
    examples: list[dict], size: float, seed: int, task: Task | None = None, stratified: bool = False
) -> list[dict]:
    """A reproducible random sample: `size` is a count (>= 1) or a fraction (< 1)."""
    count = sample_count(len(examples), size)
    rng = random.Random(seed)
    if not (stratified and task is not None and task.stratum(examples[0]) is not None):
        return rng.sample(examples, count)
    groups = by_stratum(examples, task)
    strata = sorted(groups)
    per, extra = divmod(count, len(strata))
    chosen = []
    for i, stratum in enumerate(strata):
        want = per + (1 if i < extra else 0)
        chosen.extend(rng.sample(groups[stratum], min(want, len(groups[stratum]))))
    return chosen


def balance(examples: list[dict], task: Task, seed: int) -> list[dict]:
    """The examples, then repeats of each label's examples up to the most common label's count: whole
    copies first, then a draw seeded by `seed`. A set already balanced comes back as it is."""
    groups = by_stratum(examples, task)
    most, rng, extra = max(map(len, groups.values()), default=0), random.Random(seed), []
    for label in sorted(groups):
        group = groups[label]
        copies, rest = divmod(most, len(group))
        extra += group * (copies - 1) + rng.sample(group, rest)
    return examples + extra


def data_fingerprints(data: TaskData) -> dict[str, str]:
    """A hash of each split's examples (as validated, so a re-saved file with the same rows is the same) and of
    the task spec: what a run pins on first use (data.json) to refuse a rerun over changed data."""

    def digest(value) -> str:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    return {
        "task spec": digest(data.task.spec),
        "train": digest(data.train),
        "test": digest(data.test),
        "validation": digest(data.validation),
    }
