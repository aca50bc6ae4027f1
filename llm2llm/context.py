"""What the steps of a boost read, in one object: the config, the task and its splits, the run
directory, the fixed samples and the two roles. Built by loop.prepare."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llm2llm.config import RunConfig
from llm2llm.data import TaskData
from llm2llm.roles import Student, Teacher
from llm2llm.rundir import RunDir
from llm2llm.tasks import Task


@dataclass
class RunContext:
    config: RunConfig
    data: TaskData
    run: RunDir
    seed: list[dict]  # the seed examples, fixed in seed_ids.json
    test: list[dict]  # the scored test sample, fixed in test_ids.json
    validation: list[dict]  # the validation sample (empty if the task has none), validation_ids.json
    student: Student
    teacher: Teacher

    @property
    def task(self) -> Task:
        return self.data.task

    @property
    def iterations(self) -> int:
        return self.config.planned_iterations()

    def iteration_dir(self, it: int) -> Path:
        return self.run.iteration(it)
