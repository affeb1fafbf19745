"""The ``infer`` and ``jobs`` commands of ``hqcnn-qiskit``: their parsers and handlers.

Kept apart from :mod:`hqcnn_qiskit.jobs` so that building the command-line parser loads no
numpy, torch or qiskit (``hqcnn-qiskit --help`` stays quick); each handler imports the job
machinery when it runs.
"""

from __future__ import annotations

import sys

from .jsonio import to_json
from .profiles import CONFIRM_ABOVE_SECONDS

__all__ = ["add_commands"]


def add_commands(sub, parser_class) -> None:
    """Add ``infer`` and ``jobs {list,status,fetch}`` to the ``hqcnn-qiskit`` parser."""
    from .cli import _add_data_args, _at_least_two, _resamples, add_plot_arg

    p = sub.add_parser("infer", help="run a checkpoint's circuit as one journaled job",
                       description="Run the classical front locally and the circuit of all "
                                   "images as one estimator job (IBM Quantum for kind runtime); "
                                   "the job id is journaled before waiting.")
    p.add_argument("--checkpoint", required=True, metavar="RUN_DIR/best.pt")
    p.add_argument("--backend", required=True,
                   help="profile name or .toml path: fake_brisbane, ibm_brisbane, ibm_least_busy")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--limit", type=_at_least_two, metavar="N", help="a fixed subset of N images")
    p.add_argument("--dry-run", action="store_true",
                   help="print the ISA circuit and the QPU usage estimate; submit nothing")
    p.add_argument("--no-wait", action="store_true",
                   help="return once the job is submitted (`jobs fetch` collects it)")
    p.add_argument("--yes", action="store_true",
                   help=f"submit even above {CONFIRM_ABOVE_SECONDS:.0f} s of estimated QPU usage")
    p.add_argument("--bootstrap", type=_resamples, default=2000, metavar="N",
                   help="resamples of the images behind the 95%% intervals (0: no "
                        "intervals; else >= 100)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object on stdout: that of `evaluate --json` plus job_id and "
                        "checkpoint")
    add_plot_arg(p)
    _add_data_args(p)
    p.set_defaults(func=_infer_cmd)

    p = sub.add_parser("jobs", help="list, check and fetch inference jobs",
                       description="The inference jobs in $HQCNN_HOME/jobs.jsonl.")
    jobs_sub = p.add_subparsers(dest="jobs_command", metavar="ACTION", parser_class=parser_class)
    jobs_sub.required = True
    q = jobs_sub.add_parser("list", help="every journaled job")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_list_cmd)
    run_help = ("find the job in RUN_DIR/jobs.jsonl instead of $HQCNN_HOME/jobs.jsonl: a job "
                "whose index line could not be written, or one whose id never came back, "
                "adopted by the tag its submitting line recorded")
    q = jobs_sub.add_parser("status", help="the service's state of a job")
    q.add_argument("job_id", metavar="JOB_ID")
    q.add_argument("--run", metavar="RUN_DIR", help=run_help)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_status_cmd)
    q = jobs_sub.add_parser("fetch", help="collect a job's result, finish the head, print ACC/AUC")
    q.add_argument("job_id", metavar="JOB_ID")
    q.add_argument("--run", metavar="RUN_DIR", help=run_help)
    q.add_argument("--no-wait", action="store_true", help="fail instead of waiting if not done")
    q.add_argument("--bootstrap", type=_resamples, default=2000, metavar="N",
                   help="resamples of the images behind the 95%% intervals (0: no "
                        "intervals; else >= 100)")
    q.add_argument("--json", action="store_true")
    add_plot_arg(q)
    q.set_defaults(func=_fetch_cmd)


def _print_metrics(result: dict, args) -> None:
    """The fetched metrics: ``evaluate``'s line (or JSON object) plus the job, and the plot."""
    from .cli import report_metrics

    report_metrics(result, resamples=args.bootstrap, as_json=args.json,
                   on=f"{result['backend']} (job {result['job_id']})",
                   extra={"job_id": result["job_id"], "checkpoint": result["checkpoint"]},
                   tail=f"; predictions: {result['predictions']}", plot=args.plot)


def _interrupted(command: str, job_ids: list[str], sending=None) -> int:
    """Say what an interrupted ``infer`` or ``jobs fetch`` leaves behind: exactly ``job_ids``,
    and, with ``sending`` (a :class:`~hqcnn_qiskit.jobs.InterruptedSubmission`), a job that
    may have reached the service without its id coming back."""
    prefix = f"hqcnn-qiskit {command}: interrupted"
    if sending is not None:
        print(f"{prefix} while a job was being sent; IBM Quantum may have taken it, tagged "
              f"{sending.tag}: find its id by that tag (the IBM Quantum jobs page, or "
              f"QiskitRuntimeService().jobs(job_tags=['{sending.tag}'])), then `hqcnn-qiskit "
              f"jobs fetch JOB_ID --run {sending.run_dir}` adopts it", file=sys.stderr)
    elif not job_ids:
        print(f"{prefix} before any job was submitted; nothing was sent", file=sys.stderr)
        return 130
    remote = [j for j in job_ids if not j.startswith("local-")]
    local = [j for j in job_ids if j.startswith("local-")]
    if remote:
        print(f"{prefix}; job(s) {' '.join(remote)} keep running on IBM Quantum: "
              f"`hqcnn-qiskit jobs fetch {remote[0]}` collects the result", file=sys.stderr)
    if local:
        print(f"{prefix}; local job(s) {' '.join(local)} run in the process that submits them: "
              f"`hqcnn-qiskit jobs fetch {local[0]}` collects the result if it finished, else "
              "rerun `infer`", file=sys.stderr)
    return 130


def _infer_cmd(args) -> int:
    from .jobs import InterruptedSubmission, infer

    submitted: list[str] = []  # this invocation's job ids, filled as each one exists
    try:
        result = infer(args.checkpoint, backend=args.backend, split=args.split, limit=args.limit,
                       data_root=args.data_root, verify=not args.no_verify, dry_run=args.dry_run,
                       wait=not args.no_wait, yes=args.yes, keep_scores=True,
                       submitted=submitted)
    except KeyboardInterrupt as exc:
        sending = exc if isinstance(exc, InterruptedSubmission) else None
        return _interrupted("infer", submitted, sending)
    if result.get("dry_run"):
        if args.plot:
            print("note: a dry run has no results to plot; --plot is not used", file=sys.stderr)
        if args.json:
            print(to_json({k: result[k] for k in ("plan", "estimate", "isa", "offline")}))
        else:
            print("dry run: nothing submitted")
            print("\n".join(result["plan"]))
        return 0
    if result.get("status") == "submitted":
        if args.plot:
            print(f"note: no plot yet; `hqcnn-qiskit jobs fetch {result['job_id']} --plot "
                  f"{args.plot}` draws it", file=sys.stderr)
        if args.json:
            print(to_json(result))
        else:
            print(f"submitted {' '.join(result['job_ids'])}; "
                  f"`hqcnn-qiskit jobs fetch {result['job_id']}` collects the result")
        return 0
    _print_metrics(result, args)
    return 0


def _list_cmd(args) -> int:
    from .jobs import hqcnn_home, list_jobs

    jobs = list_jobs()
    if args.json:
        print(to_json(jobs))
        return 0
    if not jobs:
        print(f"no jobs in {hqcnn_home() / 'jobs.jsonl'}")
        return 0
    print(f"{'JOB ID':<44} {'STATE':<9} {'BACKEND':<16} {'DEVICE':<14} {'SUBMITTED':<25}  "
          "RUN FOLDER")
    for j in jobs:
        part = f" part {j['part'] + 1}/{j['parts']}" if j.get("parts", 1) > 1 else ""
        print(f"{j['job_id']:<44} {j.get('state', ''):<9} {j.get('backend', ''):<16} "
              f"{j.get('device', ''):<14} {j.get('time', ''):<25}  {j.get('run_dir', '')}{part}")
    return 0


def _status_cmd(args) -> int:
    from .jobs import job_status

    info = job_status(args.job_id, run_dir=args.run)
    if args.json:
        print(to_json(info))
    else:
        reason = f" ({info['reason']})" if info["reason"] else ""
        print(f"{info['job_id']}: {info['status']}{reason} on {info['device']}")
    return 0


def _fetch_cmd(args) -> int:
    from .jobs import fetch_job

    try:
        result = fetch_job(args.job_id, run_dir=args.run, wait=not args.no_wait, keep_scores=True)
    except KeyboardInterrupt:
        return _interrupted("jobs fetch", [args.job_id])
    _print_metrics(result, args)
    return 0
