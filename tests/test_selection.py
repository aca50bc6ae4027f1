"""Which student a run hands over: the rule (llm2llm/selection.py) and what stays on disk
(loop.prune_students), on real run-directory files."""

import json
from types import SimpleNamespace

from llm2llm.intervals import wilson_interval
from llm2llm.loop import prune_students
from llm2llm.report_html import environment
from llm2llm.selection import BY_LAST, BY_VALIDATION, Selection, select_iteration, split_accuracy


def test_the_best_validation_accuracy_wins_and_a_tie_goes_to_the_earliest():
    assert select_iteration({0: 0.5, 1: 0.7, 2: 0.6}) == Selection(1, BY_VALIDATION)
    assert select_iteration({0: 0.5, 1: 0.7, 2: 0.7}) == Selection(1, BY_VALIDATION)
    assert select_iteration({0: None, 1: None}) == Selection(1, BY_LAST)  # no validation split: the last
    assert select_iteration({}) is None


def test_split_accuracy_reads_scores_json():
    scores = {"test": {"correct": 3, "total": 4}, "seed": {"correct": 0, "total": 0}}
    assert split_accuracy(scores, "test") == 0.75 and split_accuracy(scores, "seed") == 0.0
    assert split_accuracy(scores, "validation") is None


def _run(tmp_path, validation, keep_checkpoints=False):
    """A run directory whose iterations have a student folder and scores.json (validation accuracy as given)."""

    def iteration_dir(it):
        return tmp_path / f"iter_{it:03d}"

    for it, acc in enumerate(validation):
        (iteration_dir(it) / "student").mkdir(parents=True)
        scores = {"test": {"correct": 1, "total": 2}}
        if acc is not None:
            scores["validation"] = {"correct": round(acc * 10), "total": 10}
        (iteration_dir(it) / "scores.json").write_text(json.dumps(scores))
    return SimpleNamespace(
        config=SimpleNamespace(loop=SimpleNamespace(keep_checkpoints=keep_checkpoints)),
        iteration_dir=iteration_dir,
        student=SimpleNamespace(checkpoint=lambda it: iteration_dir(it) / "student"),
    )


def _students(tmp_path):
    return sorted(int(p.parent.name[-3:]) for p in tmp_path.glob("iter_*/student"))


def test_the_selected_student_and_the_newest_stay_on_disk_as_the_loop_goes(tmp_path):
    ctx = _run(tmp_path, [0.5, 0.7, 0.6, 0.7])
    prune_students(ctx, newest=1, scored=1)  # after training iteration 1: 0 is the best so far
    assert _students(tmp_path) == [0, 1, 2, 3]
    prune_students(ctx, newest=2, scored=2)  # 1 beats 0
    assert _students(tmp_path) == [1, 2, 3]
    prune_students(ctx, newest=3, scored=3)  # 2 is neither selected nor the newest
    assert _students(tmp_path) == [1, 3]
    prune_students(ctx, newest=3, scored=4)  # the end: 3 ties with 1, the earlier one is selected
    assert _students(tmp_path) == [1, 3]


def test_keep_checkpoints_keeps_every_student_and_no_validation_keeps_the_last(tmp_path):
    ctx = _run(tmp_path / "all", [0.5, 0.7, 0.6], keep_checkpoints=True)
    prune_students(ctx, newest=2, scored=3)
    assert _students(tmp_path / "all") == [0, 1, 2]
    ctx = _run(tmp_path / "none", [None, None, None])
    prune_students(ctx, newest=2, scored=3)
    assert _students(tmp_path / "none") == [2]


def test_wilson_intervals_match_published_values_and_stay_inside_0_1():
    low, high = wilson_interval(5, 10)  # by hand: centre 0.5, half-width 1.96 * sqrt(0.025 + 0.0096) / 1.384
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    assert wilson_interval(0, 10)[0] == 0.0 and round(wilson_interval(0, 10)[1], 4) == 0.2775
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)
    narrow, wide = wilson_interval(150, 200), wilson_interval(15, 20)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_the_report_page_escapes_what_the_models_wrote():
    page = environment().from_string("<td>{{ text }}</td>").render(text="<script>alert(1)</script>")
    assert page == "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"
