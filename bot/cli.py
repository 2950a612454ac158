"""`aftercare ...` commands: the only place that reads arguments and files and wires objects together."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from bot.core.conversation import Reply
from bot.core.evaluation import LabelledRow, LanguageScore, Prediction, score_rows
from bot.core.problems import InvalidContent, Problem
from bot.core.triage import Level
from bot.runtime import check, load_assistant


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        result: int = args.handler(args)
        return result
    except InvalidContent as exc:
        _print_problems(exc.problems, sys.stderr)
        print("aftercare: fix the problems above (run `aftercare check`).", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aftercare", description="Aftercare assistant for aesthetic clinics.")
    parser.add_argument(
        "--config", help="config file (default: $AFTERCARE_CONFIG, ./config.yaml, or built-in defaults)"
    )
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("check", help="validate config and all content; exit 1 on errors")
    p.set_defaults(handler=cmd_check)

    p = sub.add_parser("ask", help="answer one message as the bot would, or a batch of them")
    p.add_argument("text", nargs="?", help="the patient's message")
    p.add_argument("--lang", default=None, help="language hint (default: the clinic's default language)")
    p.add_argument("--batch", type=Path, help="JSONL file with {text, lang?} per line")
    p.add_argument("--json", action="store_true", help="print JSON objects")
    p.set_defaults(handler=cmd_ask)

    p = sub.add_parser("eval", help="score labelled JSONL files (text, lang, expect, triage)")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--min-accuracy", type=float, help="exit 1 if in-scope top-1 accuracy (%%) is lower in any language")
    p.add_argument("--min-fallback", type=float, help="exit 1 if the out-of-scope fallback rate (%%) is lower")
    p.add_argument("--min-recall", type=float, help="exit 1 if recall (%%) of any triage level is lower")
    p.add_argument("--max-false-positives", type=float, help="exit 1 if triage on calm rows (%%) is higher")
    p.add_argument("--quiet", action="store_true", help="do not list the misses")
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("run", help="run the Telegram bot (long polling, or a webhook when configured)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("shell", help="chat with the bot in this terminal (no Telegram needed)")
    p.add_argument("--lang", default=None, help="language to start in")
    p.set_defaults(handler=cmd_shell)
    return parser


# -- check ---------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    config, content, problems = check(args.config)
    _print_problems(problems, sys.stdout)
    n_errors = sum(p.severity == "error" for p in problems)
    n_warnings = len(problems) - n_errors
    if n_errors or content is None or config is None:
        print(f"{n_errors} error(s), {n_warnings} warning(s)")
        return 1
    entries = sum(len(pack.faq.entries) for pack in content.packs.values())
    questions = sum(len(e.questions) for pack in content.packs.values() for e in pack.faq.entries)
    print(
        f"OK: {len(content.packs)} languages ({', '.join(content.languages)}), {entries} entries, "
        f"{questions} example questions; {n_warnings} warning(s)"
    )
    return 0


def _print_problems(problems: list[Problem], out: TextIO) -> None:
    for problem in problems:
        print(problem, file=out)


# -- ask -----------------------------------------------------------------------------------------
def reply_record(reply: Reply) -> dict[str, Any]:
    """The JSON shape of one answer, as `ask --json` prints it."""
    return {
        "lang": reply.lang,
        "triage": reply.triage.value if reply.triage else None,
        "faq_id": reply.topic,
        "score": reply.score,
        "candidates": list(reply.candidates),
        "answer": reply.text,
    }


def cmd_ask(args: argparse.Namespace) -> int:
    config, assistant = load_assistant(args.config)
    default = args.lang or config.default_language
    if args.batch:
        for line_no, item in _jsonl(args.batch):
            if item is None:
                print(json.dumps({"error": f"{args.batch}:{line_no}: not a JSON object with 'text'"}))
                continue
            reply = assistant.answer(str(item["text"]), str(item.get("lang") or default))
            print(json.dumps(reply_record(reply), ensure_ascii=False) if args.json else reply.text)
        return 0
    if args.text is None:
        print("aftercare ask: give a message, or --batch FILE", file=sys.stderr)
        return 2
    reply = assistant.answer(args.text, default)
    if args.json:
        print(json.dumps(reply_record(reply), ensure_ascii=False, indent=2))
    else:
        print(reply.text)
        for row in reply.buttons:
            print("  " + " | ".join(f"[{b.label}]" for b in row))
    return 0


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                yield line_no, None
                continue
            yield line_no, item if isinstance(item, dict) and "text" in item else None


# -- eval ----------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    config, assistant = load_assistant(args.config)
    rows: list[LabelledRow] = []
    for path in args.files:
        for line_no, item in _jsonl(path):
            if item is None:
                print(f"{path}:{line_no}: skipped, not a labelled row", file=sys.stderr)
                continue
            triage = item.get("triage")
            rows.append(
                LabelledRow(
                    text=str(item["text"]),
                    lang=str(item.get("lang") or config.default_language),
                    expect=item.get("expect"),
                    triage=Level(triage) if triage else None,
                    source=f"{path.name}:{line_no}",
                )
            )

    def predict(row: LabelledRow) -> Prediction:
        reply = assistant.answer(row.text, row.lang)
        return Prediction(reply.triage, reply.topic)

    scores = score_rows(rows, predict)
    _print_scores(scores, quiet=args.quiet)
    return 0 if _meets(scores, args) else 1


def _print_scores(scores: dict[str, LanguageScore], quiet: bool) -> None:
    header = ("lang", "in-scope top-1", "out-of-scope fallback", "emergency", "urgent", "crisis", "triage FP")
    rows = [
        (
            lang,
            str(s.in_scope),
            str(s.out_of_scope),
            str(s.recall[Level.EMERGENCY]),
            str(s.recall[Level.URGENT]),
            str(s.recall[Level.CRISIS]),
            str(s.false_positives),
        )
        for lang, s in scores.items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if quiet:
        return
    misses = [m for s in scores.values() for m in s.misses]
    if misses:
        print(f"\nmisses ({len(misses)}):")
        for miss in misses:
            print(f"  {miss.row.source} [{miss.row.lang}] {miss.why}: {miss.row.text[:120]}")


def _meets(scores: dict[str, LanguageScore], args: argparse.Namespace) -> bool:
    ok = True
    for lang, s in scores.items():
        checks: list[tuple[float | None, float | None, bool, str]] = [
            (s.in_scope.percent, args.min_accuracy, True, "in-scope accuracy"),
            (s.out_of_scope.percent, args.min_fallback, True, "out-of-scope fallback"),
            (s.false_positives.percent, args.max_false_positives, False, "triage false positives"),
        ]
        checks += [(s.recall[level].percent, args.min_recall, True, f"{level} recall") for level in Level]
        for value, limit, is_minimum, name in checks:
            if value is None or limit is None:
                continue
            if (value < limit) if is_minimum else (value > limit):
                print(f"FAIL {lang}: {name} {value:.1f}% (limit {limit:g}%)", file=sys.stderr)
                ok = False
    return ok


# -- shell ---------------------------------------------------------------------------------------
def cmd_shell(args: argparse.Namespace) -> int:
    from bot.shell import run_shell

    config, assistant = load_assistant(args.config)
    return run_shell(assistant, args.lang or config.default_language)


# -- run -----------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from telegram.error import InvalidToken

    from bot.logs import setup_logging
    from bot.store import open_store
    from bot.telegram.app import run

    config, assistant = load_assistant(args.config)
    if config.telegram.token is None:
        print(
            "aftercare run: no Telegram token. Set TELEGRAM_BOT_TOKEN (from @BotFather), "
            "or try the bot without Telegram: aftercare shell",
            file=sys.stderr,
        )
        return 2
    secrets = [config.telegram.token.get_secret_value()]
    if config.telegram.webhook.secret_token:
        secrets.append(config.telegram.webhook.secret_token.get_secret_value())
    formatter = setup_logging(secrets)
    store = open_store(config.database_url)
    try:
        run(config, assistant, store)
    except InvalidToken:
        print("aftercare run: Telegram rejected the bot token; check TELEGRAM_BOT_TOKEN.", file=sys.stderr)
        return 1
    except Exception as exc:  # whatever it is, say it without the token and without a traceback
        print(f"aftercare run: stopped by {type(exc).__name__}: {formatter.redact(str(exc))}", file=sys.stderr)
        return 1
    return 0
