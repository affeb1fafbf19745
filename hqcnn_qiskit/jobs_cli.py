"""The ``infer`` and ``jobs`` commands of ``hqcnn-qiskit``: their parsers and handlers.

Kept apart from :mod:`hqcnn_qiskit.jobs` so that building the command-line parser loads no
numpy, torch or qiskit (``hqcnn-qiskit --help`` stays quick); each handler imports the job
machinery when it runs.
"""

from __future__ import annotations

import json
import sys

from .profiles import CONFIRM_ABOVE_SECONDS

__all__ = ["add_commands"]


def add_commands(sub, parser_class) -> None:
    """Add ``infer`` and ``jobs {list,status,fetch}`` to the ``hqcnn-qiskit`` parser."""
    from .cli import _add_data_args, _positive_int

    p = sub.add_parser("infer", help="run a checkpoint's circuit as one journaled job",
                       description="Run the classical front locally and the circuit of all "
                                   "images as one estimator job (IBM Quantum for kind runtime); "
                                   "the job id is journaled before waiting.")
    p.add_argument("--checkpoint", required=True, metavar="RUN_DIR/best.pt")
    p.add_argument("--backend", required=True,
                   help="profile name or .toml path: fake_brisbane, ibm_brisbane, ibm_least_busy")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--limit", type=_positive_int, metavar="N", help="a fixed subset of N images")
    p.add_argument("--dry-run", action="store_true",
                   help="print the ISA circuit and the QPU usage estimate; submit nothing")
    p.add_argument("--no-wait", action="store_true",
                   help="return once the job is submitted (`jobs fetch` collects it)")
    p.add_argument("--yes", action="store_true",
                   help=f"submit even above {CONFIRM_ABOVE_SECONDS:.0f} s of estimated QPU usage")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    _add_data_args(p)
    p.set_defaults(func=_infer_cmd)

    p = sub.add_parser("jobs", help="list, check and fetch inference jobs",
                       description="The inference jobs in $HQCNN_HOME/jobs.jsonl.")
    jobs_sub = p.add_subparsers(dest="jobs_command", metavar="ACTION", parser_class=parser_class)
    jobs_sub.required = True
    q = jobs_sub.add_parser("list", help="every journaled job")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_list_cmd)
    q = jobs_sub.add_parser("status", help="the service's state of a job")
    q.add_argument("job_id", metavar="JOB_ID")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_status_cmd)
    q = jobs_sub.add_parser("fetch", help="collect a job's result, finish the head, print ACC/AUC")
    q.add_argument("job_id", metavar="JOB_ID")
    q.add_argument("--no-wait", action="store_true", help="fail instead of waiting if not done")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_fetch_cmd)


_JSON_KEYS = ("acc", "auc", "n", "split", "backend", "dataset", "job_id")


def _print_metrics(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: result[k] for k in _JSON_KEYS}))
    else:
        print(f"{result['dataset']} {result['split']} on {result['backend']} "
              f"(job {result['job_id']}): acc {result['acc']:.4f}  auc {result['auc']:.4f}  "
              f"(n={result['n']}); predictions: {result['predictions']}")


def _interrupted(job_ids: list[str]) -> int:
    which = " ".join(job_ids) if job_ids else "(none submitted yet)"
    print(f"hqcnn-qiskit: interrupted; journaled job(s) {which} keep running: "
          "`hqcnn-qiskit jobs fetch JOB_ID` collects the result", file=sys.stderr)
    return 130


def _infer_cmd(args) -> int:
    from .jobs import _read_lines, hqcnn_home, infer

    try:
        result = infer(args.checkpoint, backend=args.backend, split=args.split, limit=args.limit,
                       data_root=args.data_root, verify=not args.no_verify, dry_run=args.dry_run,
                       wait=not args.no_wait, yes=args.yes)
    except KeyboardInterrupt:
        ids = [r["job_id"] for r in _read_lines(hqcnn_home() / "jobs.jsonl")[-1:]]
        return _interrupted(ids)
    if result.get("dry_run"):
        if args.json:
            print(json.dumps({k: result[k] for k in ("plan", "estimate", "isa", "offline")}))
        else:
            print("dry run: nothing submitted")
            print("\n".join(result["plan"]))
        return 0
    if result.get("status") == "submitted":
        if args.json:
            print(json.dumps(result))
        else:
            print(f"submitted {' '.join(result['job_ids'])}; "
                  f"`hqcnn-qiskit jobs fetch {result['job_id']}` collects the result")
        return 0
    _print_metrics(result, args.json)
    return 0


def _list_cmd(args) -> int:
    from .jobs import hqcnn_home, list_jobs

    jobs = list_jobs()
    if args.json:
        print(json.dumps(jobs))
        return 0
    if not jobs:
        print(f"no jobs in {hqcnn_home() / 'jobs.jsonl'}")
    for j in jobs:
        part = f" part {j['part'] + 1}/{j['parts']}" if j.get("parts", 1) > 1 else ""
        print(f"{j['job_id']:<44} {j.get('state', ''):<9} {j.get('backend', ''):<16} "
              f"{j.get('device', ''):<14} {j.get('time', '')}  {j.get('run_dir', '')}{part}")
    return 0


def _status_cmd(args) -> int:
    from .jobs import job_status

    info = job_status(args.job_id)
    if args.json:
        print(json.dumps(info))
    else:
        reason = f" ({info['reason']})" if info["reason"] else ""
        print(f"{info['job_id']}: {info['status']}{reason} on {info['device']}")
    return 0


def _fetch_cmd(args) -> int:
    from .jobs import fetch_job

    try:
        result = fetch_job(args.job_id, wait=not args.no_wait)
    except KeyboardInterrupt:
        return _interrupted([args.job_id])
    _print_metrics(result, args.json)
    return 0
