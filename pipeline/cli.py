"""The one entry point: ``cifar-automl <stage>`` (also ``python -m pipeline``).

Only argparse is imported at start-up; each command imports what it needs (TensorFlow takes
seconds to import), so ``--help`` answers at once.
Exit codes: 0 success, 2 bad input or configuration, 1 unexpected failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _cmd_prepare(args: argparse.Namespace) -> int:
    from pipeline.config import load_params
    from pipeline.prepare import run_prepare

    params = load_params(args.params)
    run_prepare(params, Path(args.params), Path(args.out), Path(args.preview))
    return EXIT_OK


def _cmd_tune(args: argparse.Namespace) -> int:
    from pipeline.config import load_params
    from pipeline.distributed import Role, parse_address
    from pipeline.families import FAMILIES

    params = load_params(args.params)
    space = Path(args.space or FAMILIES[args.family].space_file(params.tune.space_dir))
    role = Role("standalone")
    if args.role != "standalone":
        role = Role(args.role, *parse_address(args.chief), args.worker_id,
                    wait_s=args.wait_seconds, grace_s=args.grace_seconds)
    from pipeline.tune import TuneFolders, run_tune  # imports Keras, KerasTuner, MLflow

    run_tune(params, args.family, space, Path(args.data),
             TuneFolders(Path(args.tuning_dir), Path(args.models), Path(args.results)),
             role=role)
    return EXIT_OK


def _cmd_replicate(args: argparse.Namespace) -> int:
    from pipeline.config import load_params
    from pipeline.families import FAMILIES

    params = load_params(args.params)
    space = Path(args.space or FAMILIES[args.family].space_file(params.tune.space_dir))
    from pipeline.replicate import run_replicate  # imports Keras, KerasTuner

    run_replicate(params, args.family, space, Path(args.data), Path(args.models),
                  Path(args.results))
    return EXIT_OK


def _cmd_equal_time(args: argparse.Namespace) -> int:
    from pipeline.config import load_params
    from pipeline.equal_time import run_equal_time
    from pipeline.families import FAMILIES

    params = load_params(args.params)
    space = Path(args.space or FAMILIES["fc"].space_file(params.tune.space_dir))
    run_equal_time(params, Path(args.params), space, Path(args.data),
                   Path(args.results) / "cnn", Path(args.tuning_dir), Path(args.out))
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline.config import load_params

    params = load_params(args.params)
    from pipeline.evaluate import run_evaluate  # imports Keras

    run_evaluate(params, Path(args.data), Path(args.models), Path(args.results),
                 Path(args.metrics), Path(args.timings), Path(args.equal_time))
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from pipeline.report import run_report  # matplotlib, pandas, scikit-learn; no Keras

    print(run_report(Path(args.results), Path(args.metrics), Path(args.out)))
    return EXIT_OK


def _cmd_publish(args: argparse.Namespace) -> int:
    from pipeline.config import load_params

    params = load_params(args.params)
    from pipeline.publish import run_publish  # imports Keras and MLflow

    run_publish(params, Path(args.models), Path(args.results), Path(args.metrics),
                Path(args.report), Path(args.out), Path(args.data))
    return EXIT_OK


def _cmd_retune(args: argparse.Namespace) -> int:
    from pipeline.config import load_params

    params = load_params(args.params)
    from pipeline.retune import run_retune  # imports Keras, KerasTuner, MLflow

    run_retune(params, Path(args.params), Path(args.data))
    return EXIT_OK


def _cmd_history(args: argparse.Namespace) -> int:
    from pipeline.config import load_params

    params = load_params(args.params)
    from pipeline.lineage import history, plot_history
    from pipeline.tracking.store import TrackingStore

    store = TrackingStore.from_params(params.tracking)
    if store is None:
        print("error: tracking is off (tracking.uri: off): there is no history", file=sys.stderr)
        return EXIT_BAD_INPUT
    dataset = args.dataset or params.prepare.dataset
    print(history(store, dataset, params.retune.families))
    if args.png:
        print(f"plot: {plot_history(store, dataset, params.retune.families, Path(args.png))}")
    return EXIT_OK


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _cmd_ui(args: argparse.Namespace) -> int:

    from pipeline.config import load_params
    from pipeline.tracking.names import TRACKING_OFF
    from pipeline.tracking.store import TrackingStore, default_artifact_root, resolve_uri

    params = load_params(args.params)
    uri = resolve_uri(params.tracking.uri)
    if uri == TRACKING_OFF:
        print("error: tracking is off (tracking.uri: off): there is no store to browse",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.host not in LOOPBACK:
        print(f"warning: binding to {args.host}: anyone who can reach this address can read "
              "and change every run, with no login", file=sys.stderr)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--default-artifact-root", default_artifact_root().as_uri(),
               "--host", args.host, "--port", str(args.port), "--workers", "1"]
    base = f"http://{args.host}:{args.port}"
    # MLflow 3 opens on an overview page: link the project's runs table directly
    experiment = TrackingStore(uri, params.tracking.experiment).experiment_id
    print(f"MLflow UI for {uri} at {base} (Ctrl-C stops it)\n"
          f"runs of experiment {params.tracking.experiment}: "
          f"{base}/#/experiments/{experiment}/runs", flush=True)
    # browsing needs no background job consumers (MLflow 3 starts several by default)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION":
           os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}
    from pipeline.server import run_until_signalled

    return run_until_signalled(command, env)


def _cmd_show_space(args: argparse.Namespace) -> int:
    from pipeline.config import AugmentationParams, load_params
    from pipeline.families import FAMILIES
    from pipeline.spaces import load_space

    space = load_space(args.file)  # a missing or malformed file: one line
    if space.family not in FAMILIES:
        print(space.summary())
        return EXIT_OK
    _import_keras(args)  # only now: a malformed file got its one line without the wait
    from pipeline.search.hypermodel import load_family_space, trial_defaults  # Keras

    space = load_family_space(args.file, space.family)
    has_params = Path(args.params).is_file()
    policy = load_params(args.params).augmentation if has_params else AugmentationParams()
    print(space.summary())
    from pipeline.spaces import ONE_OF

    searched = set(space.names())
    # a value drawn through its unit (lr_multiplier sets learning_rate) is not fixed
    derived = {value for value, unit in ONE_OF if unit in searched}
    fixed = {k: v for k, v in trial_defaults(space.family, policy).items()
             if k not in searched | derived}
    source = args.params if has_params else "built-in defaults"
    print(f"\nfixed for every trial (the recipe's and {space.family}'s defaults; augmentation "
          f"policy from {source}):")
    for key, value in sorted(fixed.items()):
        print(f"  {key}: {value}")
    return EXIT_OK


def _cmd_lessons(args: argparse.Namespace) -> int:
    from pipeline.config import load_params

    params = load_params(args.params)
    from pipeline.lessons.run import run_lessons  # imports Keras

    run_lessons(params, Path(args.params), Path(args.data), Path(args.champion),
                Path(args.results), Path(args.out))
    return EXIT_OK


def _cmd_split_parts(args: argparse.Namespace) -> int:
    from pipeline.data.parts import split_parts

    parts = split_parts(Path(args.data), Path(args.out), int(args.max_mib * (1 << 20)),
                        tuple(args.splits))
    for part in parts:
        size = sum(f.stat().st_size for f in part.iterdir())
        print(f"{part} {size / (1 << 20):.1f} MiB")
    return EXIT_OK


def _cmd_join_parts(args: argparse.Namespace) -> int:
    from pipeline.data.parts import join_parts

    meta = join_parts(Path(args.parts), Path(args.data))
    sizes = ", ".join(f"{k} {v:,}" for k, v in meta["sizes"].items())
    print(f"{args.data}: {meta['dataset']} joined and verified ({sizes} in meta.json)")
    return EXIT_OK


def _cmd_check_params(args: argparse.Namespace) -> int:
    from pipeline.config import load_params

    params = load_params(args.params)
    for section, values in params.model_dump().items():
        print(f"{section}:")
        for key, value in values.items():
            print(f"  {key}: {value}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from pipeline.families import FAMILY_NAMES  # no Keras

    parser = argparse.ArgumentParser(
        prog="cifar-automl",
        description="Reproducible AutoML comparison of CNNs and fully connected networks on "
                    "CIFAR-10/100. Each subcommand is one DVC stage; `dvc repro` runs them all.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and TensorFlow's own start-up messages")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    prepare = commands.add_parser(
        "prepare", help="load, verify and split CIFAR; write data/prepared and a preview PNG",
        description="Load CIFAR from the source in params.yaml (folder, archive, Keras cache "
                    "or download), verify it, split it and write data/prepared/ atomically.",
    )
    prepare.add_argument("--out", default="data/prepared", help="output folder (%(default)s)")
    prepare.add_argument("--preview", default="reports/augmentation_preview.png",
                         help="augmentation preview PNG (%(default)s)")
    prepare.set_defaults(handler=_cmd_prepare)

    tune = commands.add_parser(
        "tune", help="search one family (cnn or fc), retrain its best configuration",
        description="KerasTuner search of one family over its search space, every trial "
                    "recorded in MLflow; then the best configuration is retrained and saved.",
    )
    tune.add_argument("--family", required=True, choices=FAMILY_NAMES)
    tune.add_argument("--space", help="search space file (TUNE.SPACE_DIR/FAMILY.yaml)")
    tune.add_argument("--tuning-dir", default="tuning", help="KerasTuner projects (%(default)s)")
    spread = tune.add_argument_group(
        "distributed search", "one chief serves trials to workers; all share --tuning-dir, "
        "the data and the MLflow store (see the README)")
    spread.add_argument("--role", choices=["standalone", "chief", "worker"],
                        default="standalone", help="%(default)s: no distribution")
    spread.add_argument("--chief", default="127.0.0.1:8765",
                        help="the chief's HOST:PORT (%(default)s); the chief listens there, "
                             "unauthenticated: keep it on a private network")
    spread.add_argument("--worker-id", type=int, default=0,
                        help="this worker's number; a restarted worker takes its old number "
                             "to resume its trial")
    spread.add_argument("--wait-seconds", type=float, default=300,
                        help="how long a worker waits for the chief, and any call to it "
                             "(%(default)s)")
    spread.add_argument("--grace-seconds", type=float, default=120,
                        help="how long the chief waits for running trials after the budget "
                             "before it reports them orphaned (%(default)s)")
    tune.set_defaults(handler=_cmd_tune)

    replicate = commands.add_parser(
        "replicate", help="train one family's best configuration again with other seeds",
        description="Train the best configuration of the tune stage with seeds tune.seed + 1 "
                    "... up to tune.final_seeds trainings in all (the tune stage's model is the "
                    "first), under the same budget rule; evaluate reports their spread.",
    )
    replicate.add_argument("--family", required=True, choices=FAMILY_NAMES)
    replicate.add_argument("--space", help="search space file (TUNE.SPACE_DIR/FAMILY.yaml)")
    replicate.set_defaults(handler=_cmd_replicate)

    equal_time = commands.add_parser(
        "equal-time", help="the FC searched and trained for the CNN's measured minutes",
        description="With equal_time.run on: the FC's search gets the CNN's measured search "
                    "minutes, its final training the CNN's final-training minutes, with the "
                    "CNN's augmentation (the equal-time rule); off: writes a status saying so.",
    )
    equal_time.add_argument("--space", help="the FC's search space (TUNE.SPACE_DIR/fc.yaml)")
    equal_time.add_argument("--tuning-dir", default="tuning/fc_equal_time",
                            help="KerasTuner's project folder (%(default)s)")
    equal_time.add_argument("--out", default="equal_time",
                            help="status, model and results (%(default)s)")
    equal_time.set_defaults(handler=_cmd_equal_time)

    evaluate = commands.add_parser(
        "evaluate", help="test-set verdict: CNN vs FC with intervals and McNemar's test",
        description="Evaluate each family's final model on the official test split (never used "
                    "for selection) and compare them on the same images.",
    )
    evaluate.add_argument("--timings", default="timings.json",
                          help="training and inference speed (%(default)s)")
    evaluate.add_argument("--equal-time", default="equal_time",
                          help="the equal_time stage's folder (%(default)s)")
    evaluate.set_defaults(handler=_cmd_evaluate)

    report = commands.add_parser(
        "report", help="write reports/comparison.md and its PNG figures",
        description="The comparison report: verdict table, best configurations, top trials, "
                    "learning curves, hyperparameter effects and importance, confusion.",
    )
    report.add_argument("--out", default="reports", help="report folder (%(default)s)")
    report.set_defaults(handler=_cmd_report)

    publish = commands.add_parser(
        "publish", help="MLflow: evaluation run with the report; register the best models",
        description="Log an evaluation run (test metrics, report, figures) tagged with both "
                    "searches' runs, register each family's model (alias champion if none).",
    )
    publish.add_argument("--report", default="reports", help="report folder (%(default)s)")
    publish.add_argument("--out", default="results/registry.json",
                         help="what was registered, as JSON (%(default)s)")
    publish.set_defaults(handler=_cmd_publish)

    retune = commands.add_parser(
        "retune", help="scheduled job: search again, promote the challenger only if it wins",
        description="Under a lock: bring data up to date, search each family within the "
                    "retune budget (from the champion, skipping every configuration tried "
                    "before), compare challenger and champion on the same holdout images "
                    "(test reported only), promote on a clear win. Exit codes: 0 kept or "
                    "promoted, 75 another retune or publish holds the lock, 1 failure (a store "
                    "error included: nothing is registered), 2 bad input.",
    )
    retune.set_defaults(handler=_cmd_retune)

    history = commands.add_parser(
        "history", help="champion lineage: registered versions and retune decisions")
    history.add_argument("--dataset", help="cifar10 or cifar100 (prepare.dataset)")
    history.add_argument("--png", help="also plot the versions' test accuracy over time here")
    history.set_defaults(handler=_cmd_history)

    ui = commands.add_parser(
        "ui", help="browse the MLflow store (trials, comparisons) in a browser",
        description="Start the MLflow UI on the project's tracking store. It binds to "
                    "127.0.0.1: only this machine can reach it.",
    )
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to bind (%(default)s); another address exposes every run, "
                         "unauthenticated, to whoever can reach it")
    ui.add_argument("--port", type=int, default=5000, help="port (%(default)s)")
    ui.set_defaults(handler=_cmd_ui)

    lessons = commands.add_parser(
        "lessons", help="the lecture's claims as controlled experiments: reports/lessons.md",
        description="One experiment per claim of the lecture (one factor changed, the rest "
                    "fixed), each logged to MLflow, with a figure and a verdict computed from "
                    "the numbers (params.yaml's lessons section; lessons/dvc.yaml runs it).")
    lessons.add_argument("--champion", default="results/cnn/best_hparams.json",
                         help="the tuned CNN the ablation cards start from (%(default)s)")
    lessons.add_argument("--results", default="results/lessons",
                         help="one JSON per claim (%(default)s)")
    lessons.add_argument("--out", default="reports/lessons.md",
                         help="the report; figures go to its folder's lessons/ (%(default)s)")
    lessons.set_defaults(handler=_cmd_lessons)

    show = commands.add_parser("show-space", help="validate a search space file and print it")
    show.add_argument("file", help="for example search_spaces/cnn.yaml")
    show.set_defaults(handler=_cmd_show_space)

    split = commands.add_parser(
        "split-parts", help="cut prepared data into parts of bounded size (for transfers)",
        description="Write PARTS/part-00, part-01... each at most --max-mib, with a manifest "
                    "of SHA-256 sums; join-parts puts them back together.")
    split.add_argument("--out", default=".gpudata", help="parts folder (%(default)s)")
    split.add_argument("--max-mib", type=float, default=56, help="largest part (%(default)s)")
    split.add_argument("--splits", nargs="+", default=["train", "val", "test"],
                       choices=["train", "val", "holdout", "test"],
                       help="splits to include (%(default)s: what tune and evaluate read)")
    split.set_defaults(handler=_cmd_split_parts)

    join = commands.add_parser(
        "join-parts", help="rebuild prepared data from the parts of split-parts",
        description="Check every chunk and file against its SHA-256 (and meta.json), then put "
                    "the prepared folder in place at once; a missing part changes nothing.")
    join.add_argument("--parts", default=".gpudata", help="parts folder (%(default)s)")
    join.set_defaults(handler=_cmd_join_parts)

    check = commands.add_parser("check-params", help="validate params.yaml and print it")
    check.set_defaults(handler=_cmd_check_params)

    for sub in (evaluate, report, publish):
        sub.add_argument("--metrics", default="metrics.json", help="test metrics (%(default)s)")
    for sub in (prepare, tune, replicate, equal_time, evaluate, publish, retune, history, ui,
                check, show, lessons):
        sub.add_argument("--params", default="params.yaml", help="parameters file (%(default)s)")
    for sub in (tune, replicate, equal_time, evaluate, report, publish):  # shared folders
        sub.add_argument("--results", default="results", help="results folder (%(default)s)")
    for sub in (tune, replicate, evaluate, publish):
        sub.add_argument("--models", default="models", help="best models (%(default)s)")
    for sub in (tune, replicate, equal_time, evaluate, publish, retune, split, join, lessons):
        sub.add_argument("--data", default="data/prepared", help="prepared data (%(default)s)")
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("cifar-automl")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        from pipeline import __version__

        return __version__


def _import_keras(args: argparse.Namespace) -> None:
    """Keras with its native start-up chatter captured (shown as it comes with --verbose), then
    what the imports made frozen out of the garbage collector: Keras' clear_session, which
    KerasTuner calls before every trial and the lessons before every training, runs a full
    collection (Python runs more as training allocates), and TensorFlow's half a million
    objects, alive until the process ends, made each one scan them again (a short CNN search:
    42 of its 148 s; bench/README.md, "The garbage collector out of training's way")."""
    import gc

    if args.verbose:
        import keras  # noqa: F401
    else:
        from pipeline.console import import_keras_quietly

        import_keras_quietly()
    gc.freeze()


# commands that train or load models: Keras is imported once their params file has loaded
KERAS_COMMANDS = {"prepare", "tune", "replicate", "equal-time", "evaluate", "publish", "retune",
                  "lessons"}


def _needs_keras(args: argparse.Namespace, params) -> bool:
    """Whether a Keras command has work for Keras with these params. The replicate stage with
    one seed and the equal_time stage switched off (the defaults) only write their status:
    under a second each, not the 6-10 s of importing Keras and TensorFlow on every `dvc repro`."""
    if args.command == "replicate":
        from pipeline.seeds import replicate_seeds  # the stage's own count of its trainings

        t = params.tune.for_family(args.family)
        return bool(replicate_seeds(t.seed, t.final_seeds))
    if args.command == "equal-time":
        return params.equal_time.run
    return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        from pipeline.console import quiet_native_logs

        quiet_native_logs()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
    )
    if not args.verbose:  # a retried request is the project's warning to give, in one line
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    from pipeline.errors import UserError

    try:
        if args.command in KERAS_COMMANDS:
            from pipeline.config import load_params

            params = load_params(args.params)  # a bad file: its one line before Keras'
            if _needs_keras(args, params):
                _import_keras(args)
        return args.handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # a bug, not the user's fault: show everything
        traceback.print_exc()
        print("error: unexpected failure (a bug: please report it with the traceback above)",
              file=sys.stderr)
        return EXIT_FAILURE
