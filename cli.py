"""`sleeplm-assistant` command line: inspect, analyze, cohort, ask, serve, demo.

Each subcommand is a thin shell over a library function; errors the user can fix
(`SleepLMError`) are printed without a traceback and exit with status 2. ``inspect``,
``analyze``, ``ask`` and ``serve`` take ``--channel-map`` and ``--position-map`` for files whose
channels or position codes are not recognised, and ``--annotations FILE`` for the technician's
scoring (see `sleeplm.io.scoring`); an error that asks for a channel map prints the option to
type, filled in with the file's own labels. ``inspect``, ``analyze``, ``ask``, ``serve``
and ``cohort`` take ``--precision auto|fp32|bf16|int8`` (the SleepLM encoder's; ``inspect`` prints the choice).
"""

from __future__ import annotations

import argparse
import os
import sys

from sleeplm.errors import ChannelMappingError, SleepLMError
from sleeplm.terms import AUDIENCES, PRECISION_ENV, PRECISIONS


def _cmd_inspect(args) -> int:
    from sleeplm.io.reader import load_recording

    rec = load_recording(args.file, channel_map=args.channel_map, position_map=args.position_map,
                         annotations=args.annotations)
    print(rec.describe())
    print(_precision_line(args))
    return 0


def _named_checkpoint(args) -> str | None:
    """The SleepLM weights the user named: ``--checkpoint``, else ``$SLEEPLM_CHECKPOINT`` (None: none named)."""
    from sleeplm.model.checkpoint import CHECKPOINT_ENV

    return args.checkpoint or os.environ.get(CHECKPOINT_ENV) or None


def _precision(args) -> str:
    """The encoder precision asked for: ``--precision``, else "auto" (which reads ``$SLEEPLM_PRECISION``)."""
    return args.precision or "auto"


def _precision_line(args) -> str:
    """The SleepLM encoder's precision and why: of the named weights (loaded, calibrated at the first load
    on this machine), else what auto would try on this device."""
    checkpoint = _named_checkpoint(args)
    if checkpoint:
        from sleeplm.model.inference import SleepLM

        return f"SleepLM precision: {SleepLM.from_pretrained(checkpoint, precision=_precision(args)).precision.reason}"
    from sleeplm.model.inference import resolve_device
    from sleeplm.model.precision import candidate_for, requested_precision

    requested = requested_precision(_precision(args))
    candidate, basis = candidate_for(resolve_device())
    plan = (f"{requested} asked for" if requested != "auto" else
            f"auto tries {candidate} here ({basis}; used only if it agrees with fp32 and is faster, checked at the "
            f"first load)" if candidate else f"auto keeps fp32 here ({basis})")
    return f"SleepLM precision: not chosen yet, no weights named (--checkpoint PATH); {plan}"


def _cmd_analyze(args) -> int:
    from sleeplm.io.allocator import keep_freed_memory
    from sleeplm.report.analyze_dir import analyze_to_dir

    keep_freed_memory()  # the night's arrays are freed and allocated again, step after step

    model = None
    if args.checkpoint:  # SleepLM stages the night only when its weights are given explicitly (slow on CPU)
        from sleeplm.model.inference import SleepLM

        model = SleepLM.from_pretrained(args.checkpoint, precision=_precision(args))
        print(f"SleepLM precision: {model.precision.reason}", file=sys.stderr)
    written = analyze_to_dir(args.file, args.out, model=model, rule=args.rule,
                             channel_map=args.channel_map, position_map=args.position_map,
                             annotations=args.annotations, scoring=args.scoring)
    for path in written:
        print(path)
    return 0


def _cmd_cohort(args) -> int:
    import logging

    from sleeplm.cohort import run

    import ray.data  # noqa: F401  (configures its loggers on import; quieted below)

    for name in ("ray", "ray.data"):  # the progress bar says what Ray's INFO lines would
        logging.getLogger(name).setLevel(logging.WARNING)
    # SleepLM embeds and captions the nights only when weights are named (--checkpoint or $SLEEPLM_CHECKPOINT).
    # The precision travels with the checkpoint in the SleepLM actors' loader (to Ray workers on any cluster too),
    # not through the environment (sleeplm.cohort.runner.checkpoint_loader).
    checkpoint = _named_checkpoint(args)
    cohort = run(args.input, args.out, address=args.address, num_cpus=args.num_cpus, workers=args.workers,
                 model=checkpoint, gpus_per_worker=args.gpus_per_worker, model_workers=args.model_workers,
                 hypopnea_rule=args.rule, progress=True, retry_failed=args.retry_failed, precision=args.precision)
    done, failed = len(cohort.done), len(cohort.failed)
    print(f"{done} nights measured, {failed} failed"
          f"{' (see failed.csv; a run started again retries them only with --retry-failed)' if failed else ''}; "
          f"SleepLM: {'embeddings and captions' if checkpoint else 'not run (no --checkpoint)'}; tables in {args.out}")
    return 0 if done else 1


def _cmd_ask(args) -> int:
    from assistant.cli import run_ask

    return run_ask(args)


def _cmd_serve(args) -> int:
    import app

    app.serve(host=args.host, port=args.port, recording=args.recording, channel_map=args.channel_map,
              position_map=args.position_map, cohort=args.cohort, nights=args.nights, llm=args.llm,
              annotations=args.annotations, rule=args.rule, checkpoint=args.checkpoint, precision=_precision(args))
    return 0


def _add_map_options(parser: argparse.ArgumentParser) -> None:
    from sleeplm.io.channels import POSITION_MAPS

    parser.add_argument(
        "--channel-map", default=None, metavar="NAME=LABEL,...|FILE",
        help="which file channel feeds which SleepLM channel, e.g. EEG_C3_A2=C3-A1,EMG_Chin=EMG1 "
             "('A-B' derives channel A minus channel B), or a .json/.toml file of NAME = LABEL pairs",
    )
    parser.add_argument(
        "--position-map", default=None, metavar="NAME|FILE",
        help=f"how the file codes body position: {', '.join(sorted(POSITION_MAPS))}, or a .json/.toml file "
             "mapping the file's codes to Right, Left, Supine, Prone or Upright",
    )
    parser.add_argument(
        "--annotations", default=None, metavar="FILE",
        help="the technician's scoring of the recording: EDF+ hypnogram, NSRR or Profusion XML, UCDDB "
             "*_respevt.txt/*_stage.txt, Noxturnal CSV export or CSV (default: a file named like the recording "
             "beside it, e.g. night-nsrr.xml, night-profusion.xml, night.xml, night_respevt.txt)",
    )


def _add_precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=None,
        help=f"SleepLM signal encoder precision (default: ${PRECISION_ENV}, else auto: chosen for this machine by its "
             "flags, agreement with fp32 and a short timing at the first load, then cached; an explicit one is "
             "used even where it is slower than fp32, with a warning)",
    )


def _add_scoring_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scoring", choices=("technician", "automatic"), default="technician",
        help="when the recording comes with scoring: use the technician's (default) or this product's own "
             "automatic staging and events for the results; the two are compared either way")


def _add_rule_option(parser: argparse.ArgumentParser) -> None:
    from sleeplm.measure.rules import DEFAULT_RULE, RULES, resolve_rule

    def rule(text: str) -> str:
        try:
            return resolve_rule(text).name
        except SleepLMError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    parser.add_argument("--rule", "--hypopnea-rule", dest="rule", type=rule, default=DEFAULT_RULE, metavar="NAME",
                        help=f"apnea/hypopnea scoring rule: {', '.join(RULES)} (default {DEFAULT_RULE}: AASM 2012 "
                             "rule 1A; 1B is the 4%% rule); --hypopnea-rule is its former name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sleeplm-assistant", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="local SleepLM checkpoint file (else $SLEEPLM_CHECKPOINT, else the Hugging Face hub)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="preflight report of a recording's channels")
    p.add_argument("file")
    _add_map_options(p)
    _add_precision_option(p)
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("analyze", help="measure the night (no LLM) and write summary/events/hypnogram/report")
    p.add_argument("file")
    p.add_argument("--out", required=True, help="output directory")
    _add_rule_option(p)
    _add_scoring_option(p)
    _add_map_options(p)
    _add_precision_option(p)
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("cohort", help="many nights on Ray Data into tidy tables (nights/events/hypnograms.parquet)")
    p.add_argument("input", help="folder searched recursively for EDF/EDF+/BDF, or a CSV manifest "
                                 "(path, subject_id, night_label, channel_map, annotations)")
    p.add_argument("--out", required=True, help="cohort folder (an existing one is resumed)")
    p.add_argument("--address", default=None, help="existing Ray cluster, e.g. ray://head:10001 (default: local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray session (default: all)")
    p.add_argument("--workers", type=int, default=None, help="nights measured at the same time (default: all CPUs)")
    p.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per SleepLM actor (default 0: CPU)")
    p.add_argument("--model-workers", type=int, default=None, help="SleepLM actors (default: GPUs / gpus-per-worker, else 1)")
    _add_rule_option(p)
    p.add_argument("--retry-failed", action="store_true",
                   help="measure again the nights an earlier run of --out recorded as failed (default: reported, "
                        "not re-read; a changed file or option is always measured)")
    _add_precision_option(p)
    p.set_defaults(func=_cmd_cohort)

    p = sub.add_parser("ask", help="ask one question about a recording, two nights of one person, or a cohort folder")
    p.add_argument("file", nargs="+", help="a recording; or two recordings of one person (night 1, night 2); "
                                           "or a folder written by `cohort`")
    p.add_argument("question")
    p.add_argument("--llm", default=None, help="LLM backend spec (see README); default: config/env, else embedded")
    p.add_argument("--audience", choices=AUDIENCES, default="clinician")
    p.add_argument("--json", action="store_true", help="print one JSON object (answer, tool_calls, grounding, llm, llm_messages)")
    _add_scoring_option(p)
    _add_rule_option(p)
    _add_map_options(p)
    _add_precision_option(p)
    p.set_defaults(func=_cmd_ask)

    p = sub.add_parser("serve", help="start the Gradio app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    served = p.add_mutually_exclusive_group()
    served.add_argument("--recording", default=None, help="preload this recording (default: the built-in demo night)")
    served.add_argument("--cohort", default=None, metavar="DIR",
                        help="serve a cohort folder written by `cohort`: the chat answers questions across its nights")
    served.add_argument("--nights", nargs=2, default=None, metavar="FILE",
                        help="two recordings of one person: measured on Ray first, then served as night 1 and night 2")
    p.add_argument("--llm", default=None, help="LLM backend spec, e.g. local (chosen for this machine) or "
                                               "local:qwen2.5-7b-instruct; default: config/env, else local")
    _add_rule_option(p)
    _add_map_options(p)
    _add_precision_option(p)
    p.set_defaults(func=_cmd_serve)
    return parser


def channel_map_advice(exc: ChannelMappingError) -> str | None:
    """The ``--channel-map`` option to type for an error that asks for a map, with the file's labels."""
    if not exc.wanted or not exc.labels:
        return None
    from sleeplm.io.channels import map_hint

    return ("Name the channels on the command line (replace each <...> with one label; quote labels with spaces):\n"
            f"  --channel-map {map_hint(exc.labels, exc.wanted)}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # --checkpoint and --precision go down as arguments; $SLEEPLM_CHECKPOINT and $SLEEPLM_PRECISION are read, never written.
    try:
        if hasattr(args, "channel_map"):  # the maps are checked before any file is read
            from sleeplm.io.channels import parse_channel_map, parse_position_map

            args.channel_map = parse_channel_map(args.channel_map)
            args.position_map = parse_position_map(args.position_map)
        return args.func(args)
    except SleepLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        advice = channel_map_advice(exc) if isinstance(exc, ChannelMappingError) else None
        if advice:
            print(advice, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
