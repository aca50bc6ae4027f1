"""Where a paired difference between two methods comes from, label by label (issue 27's "why").

For each RNG seed, the test points one method is ahead of the other, split by the gold label of the
test examples (right answers for the method minus right answers for the reference on that label, over
the whole split), beside how many training examples each run had of that label. The same numbers as
`llm2llm compare`'s paired difference, summed across labels.

python bench/per_label.py --runs runs/edge/snips-cpu-qwen runs/edge/snips-cpu-qwen-seed1 \
    --reference runs/edge/snips-cpu-qwen-p4-auggpt runs/edge/snips-cpu-qwen-matched-auggpt-seed1 [--split test]
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def last(run: Path) -> tuple[int, dict]:
    """The run's RNG seed and its last iteration's entry (metrics.json)."""
    metrics = json.loads((run / "metrics.json").read_text())
    return metrics.get("data_seed", 0), metrics["iterations"][-1]


def scores(run: Path, iteration: int, split: str) -> dict:
    """The split's scores of one iteration: total, correct, confusion (gold label -> answer -> count)."""
    return json.loads((run / f"iter_{iteration:03d}" / "scores.json").read_text())[split]


def train_labels(run: Path, iteration: int) -> collections.Counter:
    lines = (run / f"iter_{iteration:03d}" / "train.jsonl").read_text().splitlines()
    return collections.Counter(json.loads(line)["label"] for line in lines if line.strip())


def by_seed(runs: list[Path]) -> dict[int, tuple[Path, int]]:
    out = {}
    for run in runs:
        seed, entry = last(run)
        out[seed] = (run, entry["iteration"])
    return out


def rows(runs: list[Path], reference: list[Path], split: str) -> list[str]:
    mine, theirs = by_seed(runs), by_seed(reference)
    seeds = sorted(set(mine) & set(theirs))
    labels = sorted({label for s in seeds for label in scores(*mine[s], split)["confusion"]})
    lines = [
        "| seed | difference | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 2) + "|",
    ]
    for seed in seeds:
        (run, it), (ref, ref_it) = mine[seed], theirs[seed]
        sm, sr = scores(run, it, split), scores(ref, ref_it, split)
        cm, cr, total = sm["confusion"], sr["confusion"], sm["total"]
        tm, tr = train_labels(run, it), train_labels(ref, ref_it)
        cells, difference = [], 0.0
        for label in labels:
            points = 100 * (cm.get(label, {}).get(label, 0) - cr.get(label, {}).get(label, 0)) / total
            difference += points
            cells.append(f"{points:+.1f} ({tm[label]} / {tr[label]})")
        lines.append(f"| {seed} | {difference:+.1f} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="The method's run folders.")
    parser.add_argument("--reference", nargs="+", type=Path, required=True, help="The reference's, same seeds.")
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    args = parser.parse_args()
    print(
        f"{args.split} points the runs are ahead of the reference, by gold label (in brackets: training examples of "
        "that label, run / reference)\n"
    )
    print("\n".join(rows(args.runs, args.reference, args.split)))


if __name__ == "__main__":
    main()
