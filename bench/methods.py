"""The method comparison behind BENCHMARKS.md's "Methods" table: plain fine-tuning, EDA, AugGPT and
LLM2LLM on each data set, one run per RNG seed, then `llm2llm compare` over the runs it made.

    python bench/methods.py [--datasets snips trec] [--seeds 0 1 2] [--profile cpu-compare]
                            [--seed-sizes 14 35] [--set K=V] [--tag NAME] [--drop-weights]

The paper's ablations are runs of the same kind: `--methods one-shot` asks the teacher, once, for
as many examples as the same seed's finished llm2llm run asked for in all its iterations (read
from its metrics.json; without one, teacher.per_wrong x loop.iterations per wrong example), and
`--set loop.continue_training=true --tag continued` trains each iteration from the last student.
`--methods auggpt --match-budget` sets AugGPT's paraphrases per seed example the same way, from the
examples the same seed's llm2llm run (the untagged one, or `--budget-from TAG`'s) asked for, so both
spend about the same teacher output tokens where a paraphrase is as long as a new example. Where it is
not (SST-2's seed examples are phrase fragments, LLM2LLM's new examples whole reviews), `--methods
auggpt --match-tokens --tag tokens` scales that count by the ratio of the two runs' teacher output
tokens (it needs the `--match-budget --tag matched` run of the same seed; with `--budget-from TAG`, the one
tagged `TAGmatched`), so the budgets are equal in tokens, the unit issue 27 counts. A run with
`teacher.paraphrase` needs no probe: its own paraphrase answers give the tokens a paraphrase costs. Where
AugGPT's own paraphrases come out shorter or longer than that (its tokens over 10 % off), `--probe-tag TAG`
rescales from the finished AugGPT run tagged TAG instead.

Every run is an ordinary `llm2llm boost`, so rerunning this script resumes unfinished runs and
skips finished ones. Runs go seed by seed (all methods for seed 0 first), so a stopped sweep
still compares every method on the same seeds. The closing table goes to RUNS_DIR/compare, or
RUNS_DIR/compare-tag-NAME for a `--tag NAME` sweep, so one recipe's sweep keeps another's table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from llm2llm.compare import output_tokens
from llm2llm.data import find_spec, load_spec
from llm2llm.store import read_jsonl
from llm2llm.tasks import TASK_TYPES
from llm2llm.teacher import count_tokens

REPO = Path(__file__).resolve().parent.parent
METHODS = ("plain", "eda", "auggpt", "llm2llm")  # the default comparison
ABLATIONS = ("one-shot",)


def run_name(dataset: str, profile: str, method: str, seed: int, size: int | None, tag: str = "") -> str:
    """boost's own default name (<dataset>-<profile>[-<method>][-seed<N>]), with the seed size and a
    tag after the profile when given, so each cell has its own runs."""
    return (
        f"{dataset}-{profile}"
        + (f"-n{size}" if size else "")
        + (f"-{tag}" if tag else "")
        + ("" if method == "llm2llm" else f"-{method}")
        + (f"-seed{seed}" if seed else "")
    )


def finished(run: Path) -> dict | None:
    """A run's metrics.json once the run has finished (None before: its counts are not its final ones)."""
    path = run / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    return metrics if metrics.get("complete") else None


def llm2llm_budget(run: Path) -> int | None:
    """Examples a finished llm2llm run asked the teacher for, over all its iterations (None if unfinished)."""
    metrics = finished(run)
    return sum(it["generated"] or 0 for it in metrics["iterations"]) if metrics else None


def token_matched(llm2llm: Path, probe: Path) -> int:
    """AugGPT's paraphrases per seed example for the llm2llm run's teacher output tokens: the probe
    (a finished AugGPT run of the same seed) asked for `generated` paraphrases and the teacher wrote
    `output_tokens` for them, so scale its count per seed example by the ratio of the two."""
    metrics, probe_metrics, probe_asked = finished(llm2llm), finished(probe), llm2llm_budget(probe)
    if not metrics or not probe_metrics or not probe_asked:
        sys.exit(f"--match-tokens: {llm2llm} and {probe} must both have finished (run --match-budget --tag matched)")
    return max(1, round(probe_asked / seed_size(probe) * output_tokens(metrics) / output_tokens(probe_metrics)))


def paraphrase_prompts(run: Path, records: list[dict]) -> set[str]:
    """The prompts among a run's teacher requests that hold its task's paraphrase request for their seed
    example (the run's first training set), as the task spec words it now."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    spec = load_spec(find_spec(config["data"]["dataset"])[0])
    task = TASK_TYPES[spec["type"]](name=spec.get("name", ""), spec=spec)
    seed = {ex["id"]: ex for ex in read_jsonl(run / "iter_000" / "train.jsonl")}
    return {
        r["prompt"]
        for r in records
        if r["parent_id"] in seed and task.teacher_paraphrase(seed[r["parent_id"]], "chat", r["asked"]) in r["prompt"]
    }


def paraphrase_matched(run: Path) -> int | None:
    """AugGPT's paraphrases per seed example for a finished teacher.paraphrase run's teacher output tokens, at
    the tokens its own paraphrases cost (counted as the run counts them); None for an unfinished run or one
    that asked for no paraphrases. It stands in for a --match-budget probe run: same teacher, same request."""
    from transformers import AutoTokenizer  # only this path needs it

    if not finished(run):
        return None
    records = [r for f in sorted(run.glob("iter_*/teacher_outputs.jsonl")) for r in read_jsonl(f)]
    prompts = paraphrase_prompts(run, records)
    paraphrases = [r for r in records if r["prompt"] in prompts]
    if not paraphrases:
        return None
    tokenizer = AutoTokenizer.from_pretrained(json.loads((run / "models.json").read_text())["teacher"]["path"])
    outputs = {r["key"]: r["output"] for r in records}
    written, paraphrased = (count_tokens(tokenizer, rs, outputs)["completion_tokens"] for rs in (records, paraphrases))
    per_paraphrase = paraphrased / sum(r["asked"] for r in paraphrases)
    return max(1, round(written / seed_size(run) / per_paraphrase))


def auggpt_per_example(llm2llm: Path, probe: Path, own_rate: bool) -> int:
    """--match-tokens: AugGPT's paraphrases per seed example for the llm2llm run's teacher output tokens, at the
    rate its own paraphrases set where it has them and own_rate (no probe run needed), else at the probe's."""
    per_example = paraphrase_matched(llm2llm) if own_rate else None
    return per_example if per_example is not None else token_matched(llm2llm, probe)


def drop_weights(run: Path) -> int:
    """Delete a finished run's student weights (its selected student's *.safetensors; everything compare and
    the reports read stays); bytes freed, 0 for an unfinished run, which a rerun still needs whole."""
    if not finished(run):
        return 0
    freed = 0
    for weights in run.glob("iter_*/student/*.safetensors"):
        freed += weights.stat().st_size
        weights.unlink()
    return freed


def seed_size(run: Path) -> int:
    return len(json.loads((run / "seed_ids.json").read_text()))


def compare_folder(runs_dir: str, tag: str) -> str:
    """Where the closing table goes: one folder per --tag, so a tagged sweep keeps another recipe's table."""
    return f"{runs_dir}/compare" + (f"-tag-{tag}" if tag else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["snips", "trec"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS + ABLATIONS)
    parser.add_argument("--profile", default="cpu-compare")
    parser.add_argument("--runs-dir", default="runs/methods")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A config override passed to every run (boost --set), e.g. loop.iterations=2.",
    )
    parser.add_argument(
        "--seed-sizes",
        nargs="+",
        type=int,
        default=[None],
        help="Seed examples per run (default: the profile's); several sizes make one cell each.",
    )
    parser.add_argument("--tag", default="", help="Put in every run's name, e.g. 'continued' for an ablation's --set.")
    parser.add_argument(
        "--match-budget",
        action="store_true",
        help="auggpt: paraphrases per seed example = the examples the same seed's finished llm2llm run asked the "
        "teacher for, divided by the seed size (rounded): about its teacher output tokens.",
    )
    parser.add_argument(
        "--budget-from",
        default="",
        metavar="TAG",
        help="--match-budget, --match-tokens, one-shot: match the same seed's llm2llm run with this --tag (default: "
        "the untagged one, the paper's recipe), e.g. k12 for a run with --set teacher.per_wrong=12 --tag k12.",
    )
    parser.add_argument(
        "--match-tokens",
        action="store_true",
        help="auggpt: paraphrases per seed example scaled from the same seed's --match-budget --tag matched run "
        "by the ratio of teacher output tokens (the llm2llm run's over that run's): equal tokens, not examples. "
        "For an llm2llm run with teacher.paraphrase, the tokens of its own paraphrases set the rate (no probe run).",
    )
    parser.add_argument(
        "--probe-tag",
        default="",
        metavar="TAG",
        help="--match-tokens: the same seed's finished AugGPT run with this --tag sets the tokens a paraphrase costs "
        "(e.g. paratokens, when a first token-matched run came out over 10 %% off); default: the run's own "
        "paraphrases, else the --match-budget run tagged BUDGET_FROMmatched.",
    )
    parser.add_argument(
        "--drop-weights",
        action="store_true",
        help="Delete each run's student weights once it has finished (a sweep keeps 0.5 GB per run of a 135M "
        "student otherwise; comparing needs only the records). The run can no longer be exported or served.",
    )
    parser.add_argument(
        "--reference", default=None, help="compare --reference: the method the others are paired with (e.g. auggpt)."
    )
    args = parser.parse_args()
    llm2llm = [sys.executable, "-m", "launcher.cli"]
    made = []  # compared at the end; other runs in the folder (other recipes, sizes) may not go in one table
    for dataset in args.datasets:
        for size in args.seed_sizes:
            for seed in args.seeds:
                for method in args.methods:
                    command = [
                        *llm2llm,
                        "boost",
                        "--profile",
                        args.profile,
                        "--dataset",
                        dataset,
                        "--method",
                        method,
                        "--rng-seed",
                        str(seed),
                        "--runs-dir",
                        args.runs_dir,
                    ]
                    command += [arg for item in args.sets for arg in ("--set", item)]
                    if size:
                        command += ["--seed-size", str(size)]
                    name = run_name(dataset, args.profile, method, seed, size, args.tag)
                    command += ["--run", name]
                    made.append(f"{args.runs_dir}/{name}")
                    # the same seed's llm2llm run (the paper's recipe, or --budget-from's): the budget to match
                    base = Path(args.runs_dir) / run_name(
                        dataset, args.profile, "llm2llm", seed, size, args.budget_from
                    )
                    if method == "auggpt" and args.match_budget:  # as many new examples as llm2llm asked for
                        budget = llm2llm_budget(base)
                        if budget is None:
                            sys.exit(f"--match-budget: {base} has not finished; run --methods llm2llm first")
                        per_example = max(1, round(budget / seed_size(base)))
                        command += ["--set", f"baselines.auggpt_per_example={per_example}"]
                        print(f"auggpt: {per_example} paraphrases per seed example for {budget} asked by {base}")
                    if method == "auggpt" and args.match_tokens:  # as many teacher output tokens as llm2llm
                        # --probe-tag's AugGPT run, else the --match-budget one ("matched", "k12matched")
                        probe_tag = args.probe_tag or f"{args.budget_from}matched"
                        probe = Path(args.runs_dir) / run_name(dataset, args.profile, "auggpt", seed, size, probe_tag)
                        per_example = auggpt_per_example(base, probe, own_rate=not args.probe_tag)
                        command += ["--set", f"baselines.auggpt_per_example={per_example}"]
                        print(f"auggpt: {per_example} paraphrases per seed example for the output tokens of {base}")
                    if method == "one-shot":  # the same teacher budget as this seed's llm2llm run
                        budget = llm2llm_budget(base)
                        if budget:
                            command += ["--set", f"baselines.one_shot_total={budget}"]
                        print(f"one-shot budget: {budget or 'teacher.per_wrong x loop.iterations'} ({base})")
                    print("+", " ".join(command[2:]), flush=True)
                    subprocess.run(command, cwd=REPO, check=True)
                    if args.drop_weights:
                        print(f"{name}: student weights dropped, {drop_weights(Path(args.runs_dir) / name) >> 20} MiB")
    reference = ["--reference", args.reference] if args.reference else []
    compare = [*llm2llm, "compare", *made, "--output", compare_folder(args.runs_dir, args.tag), *reference]
    return subprocess.run(compare, cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main())
