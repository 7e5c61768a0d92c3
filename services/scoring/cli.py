"""`kequn scores export --period P [--output F]`: a period's scores as CSV for HR
systems that want a file.

Goes through the scoring server's ListScores (the same paged pull HR codes
against, with the same role check), authenticated by the token in KEQUN_TOKEN;
the server is KEQUN_SCORING_TARGET or 127.0.0.1:50053. Only finalized results
unless --include-unfinalized. The file is written to a temporary name and
renamed at the end, so a failed export never leaves half a file behind.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path
from typing import IO

import grpc

from kequn.scoring.v1 import scoring_pb2 as pb
from kequn.scoring.v1 import scoring_pb2_grpc
from services.common.client import dial
from services.common.config import service_target

SUMMARY = ["period_id", "staff_id", "role", "branch_id", "total", "rank", "peer_group_size", "status", "revision",
           "scorecard", "scorecard_version", "revision_reason", "revised_by"]
DETAIL = SUMMARY + ["indicator_id", "method", "raw_value", "score", "full_marks", "peer_mean", "peer_stddev",
                    "peer_count", "note"]


def register(subparsers) -> None:
    scores = subparsers.add_parser("scores", help="staff scores (scoring service)")
    commands = scores.add_subparsers(dest="scores_command", required=True)
    export = commands.add_parser("export", help="write a period's scores as CSV (via ListScores)")
    export.add_argument("--period", required=True, help="period id, e.g. 2025")
    export.add_argument("--output", "-o", default="-", help="CSV file (default: standard output)")
    export.add_argument("--role", default="", help="only this role")
    export.add_argument("--branch", default="", help="only this branch")
    export.add_argument("--detail", action="store_true", help="one row per indicator instead of per person")
    export.add_argument("--include-unfinalized", action="store_true", help="also a period not finalized yet")
    export.add_argument("--page-size", type=int, default=1000)
    export.add_argument("--target", default=None, help="scoring server host:port")
    export.set_defaults(func=export_command)


def _rows(score: pb.StaffScore, detail: bool):
    head = [score.period_id, score.staff_id, score.role, score.branch_id, score.total, score.rank,
            score.peer_group_size, pb.ScoreStatus.Name(score.status).removeprefix("SCORE_STATUS_"), score.revision,
            score.scorecard.name, score.scorecard.version, score.revision_reason, score.revised_by]
    if not detail:
        yield head
        return
    for i in score.indicators:
        yield head + [i.indicator_id, i.method, i.raw_value, i.score, i.full_marks, i.peer_mean, i.peer_stddev,
                      i.peer_count, i.note]


def export_scores(stub, out: IO[str], period: str, *, role: str = "", branch: str = "", detail: bool = False,
                  finalized_only: bool = True, page_size: int = 1000) -> int:
    """Writes every page of ListScores as CSV; returns the number of people."""
    writer = csv.writer(out)
    writer.writerow(DETAIL if detail else SUMMARY)
    token, people = "", 0
    while True:
        page = stub.ListScores(pb.ListScoresRequest(period_id=period, role=role, branch_id=branch,
                                                    finalized_only=finalized_only, page_size=page_size,
                                                    page_token=token), timeout=60)
        for score in page.scores:
            writer.writerows(_rows(score, detail))
        people += len(page.scores)
        token = page.next_page_token
        if not token:
            return people


def export_command(args: argparse.Namespace) -> int:
    token = os.environ.get("KEQUN_TOKEN")
    if not token:
        print("kequn scores export: set KEQUN_TOKEN to a token with the hr role", file=sys.stderr)
        return 2
    channel = dial(args.target or service_target("scoring"), token)
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    options = dict(role=args.role, branch=args.branch, detail=args.detail,
                   finalized_only=not args.include_unfinalized, page_size=args.page_size)
    try:
        if args.output == "-":
            people = export_scores(stub, sys.stdout, args.period, **options)
        else:
            target = Path(args.output)
            fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=".scores-")
            try:
                with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
                    people = export_scores(stub, out, args.period, **options)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except grpc.RpcError as exc:
        print(f"kequn scores export: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        channel.close()
    if people == 0 and not args.include_unfinalized:
        print(f"no finalized scores for period {args.period} (use --include-unfinalized for a draft)",
              file=sys.stderr)
    print(f"exported {people} people", file=sys.stderr)
    return 0
