"""`aftercare ...` commands: the only place that reads arguments and files and wires objects together.

Every mistake a person can make here (a missing file, a bad JSON line, an unknown language, no
network, a rejected token) is one clear line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.config import Config
from bot.core.conversation import Assistant, Kind, Reply
from bot.core.evaluation import LabelledRow, LanguageScore, Prediction, score_rows
from bot.core.plans import TREATMENTS, preview
from bot.core.problems import InvalidContent, Problem
from bot.core.safety.classifier import Report
from bot.core.safety.model import Level
from bot.core.safety.training import danger_questions
from bot.runtime import check, check_config, load_assistant

EXIT_USAGE = 2


class UserError(Exception):
    """A mistake in how a command was called or in a file it was given: printed as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        result: int = args.handler(args)
        return result
    except InvalidContent as exc:
        _print_problems(exc.problems, sys.stderr)
        print("aftercare: fix the problems above (run `aftercare check`).", file=sys.stderr)
        return 1
    except UserError as exc:
        print(f"aftercare {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`aftercare ask --batch ... | head`): stop quietly, and keep Python's
        # final flush of stdout from raising again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _version() -> str:
    try:
        return version("aftercare")
    except PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    # Options common to every command, accepted before or after the command's name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $AFTERCARE_CONFIG, ./config.yaml, or the built-in demo clinic)",
    )
    parser = argparse.ArgumentParser(
        prog="aftercare",
        description="Aftercare assistant for aesthetic clinics: curated FAQ, safety triage, staff alerts, reminders.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"aftercare {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], summary: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=summary, parents=[common])
        p.set_defaults(handler=handler)
        return p

    command(
        "check",
        cmd_check,
        "validate the config and all content; print the safety classifier's figures; exit 1 on errors",
    )

    p = command("ask", cmd_ask, "answer one message as the bot would, or a batch of them")
    p.add_argument("text", nargs="?", help="the patient's message")
    p.add_argument("--lang", help="the patient's language (default: the clinic's default language)")
    p.add_argument("--batch", type=Path, metavar="FILE", help='a JSONL file with {"text", "lang"?} per line')
    p.add_argument("--json", action="store_true", help="print JSON objects (one per line with --batch)")

    p = command("eval", cmd_eval, "score labelled JSONL files (text, lang, expect, triage[, near_miss])")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="labelled JSONL files")
    p.add_argument(
        "--min-accuracy", type=float, metavar="PCT", help="exit 1 if in-scope top-1 accuracy is lower in any language"
    )
    p.add_argument(
        "--min-fallback",
        type=float,
        metavar="PCT",
        help="exit 1 if the out-of-scope fallback rate is lower in any language",
    )
    p.add_argument(
        "--max-wrong",
        type=float,
        metavar="PCT",
        help="exit 1 if wrong answers are more than this share in any language",
    )
    p.add_argument(
        "--min-recall", type=float, metavar="PCT", help="exit 1 if recall of any triage level is lower in any language"
    )
    p.add_argument(
        "--max-false-positives",
        type=float,
        metavar="PCT",
        help="exit 1 if alerts plus questions on calm rows are more in any language",
    )
    p.add_argument("--quiet", action="store_true", help="do not list the misses")

    command("run", cmd_run, "run the Telegram bot (long polling, or a webhook when configured)")

    p = command("plan", cmd_plan, "show the reminders a patient gets after a treatment, and when")
    p.add_argument("treatment", help=f"one of: {', '.join(TREATMENTS)}")
    p.add_argument("--at", required=True, metavar="DATETIME", help='the treatment time, e.g. "2026-12-01 15:30"')
    p.add_argument("--tz", metavar="ZONE", help="the patient's time zone (default: the clinic's)")
    p.add_argument("--lang", help="the patient's language (default: the clinic's default language)")
    p.add_argument("--json", action="store_true", help='print [{"step", "due", "text"}] as JSON')

    p = command("invite", cmd_invite, "create invite links (and QR codes) that enrol a patient for a treatment")
    p.add_argument("treatment", help=f"one of: {', '.join(TREATMENTS)}")
    p.add_argument("--at", required=True, metavar="DATETIME", help='the treatment time, e.g. "2026-12-01 15:30"')
    p.add_argument("--tz", metavar="ZONE", help="the time zone of --at (default: the clinic's)")
    p.add_argument("--ref", default="", metavar="CLINIC_REF", help="your own reference (letters and digits, <= 16)")
    p.add_argument("--count", type=int, default=1, metavar="N", help="how many links (one per patient)")
    p.add_argument("--qr", type=Path, metavar="FILE.png", help="also write QR codes (FILE-2.png... for --count > 1)")
    p.add_argument("--json", action="store_true", help='print {"link", "payload", "expires"} (a list with --count)')

    p = command("init", cmd_init, "write a config.yaml and a copy of the content to edit into a folder")
    p.add_argument("folder", type=Path, help="the clinic's folder (created if missing)")

    p = command("shell", cmd_shell, "chat with the bot in this terminal, as a patient would (no Telegram needed)")
    p.add_argument("--lang", help="the language to start in")
    return parser


def _lang_option(assistant: Assistant, value: str | None, default: str) -> str:
    if value is None:
        return default
    if not assistant.supports(value):
        raise UserError(f"unknown language '{value}'; this content has {', '.join(assistant.content.languages)}")
    return assistant.lang(value)


# -- check ---------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    from bot.runtime import safety_figures

    config, content, problems = check(getattr(args, "config", None))
    _print_problems(problems, sys.stdout)
    n_errors = sum(p.severity == "error" for p in problems)
    n_warnings = len(problems) - n_errors
    if n_errors or content is None or config is None:
        print(f"{n_errors} error(s), {n_warnings} warning(s)")
        return 1
    for lang, topic, question, level in danger_questions(content):
        print(
            f"{content_file(config, lang)}: warning: the example question '{question}' of '{topic}' reports a "
            f"danger sign ({level}): patients asking it get the safety message, never this answer"
        )
        n_warnings += 1
    report = safety_figures(content)
    warnings = _print_report(report)
    entries = sum(len(pack.faq.entries) for pack in content.packs.values())
    questions = sum(len(e.questions) for pack in content.packs.values() for e in pack.faq.entries)
    print(
        f"OK: {len(content.packs)} languages ({', '.join(content.languages)}), {entries} entries, "
        f"{questions} example questions; {n_warnings + warnings} warning(s)"
    )
    return 0


def content_file(config: Config, lang: str) -> str:
    path = config.content_dir / lang / "faq.yaml"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _print_report(report: Report) -> int:
    """The classifier's cross-validated figures per language; returns how many warnings it printed."""
    print("Safety classifier, cross-validated on the curated examples (a question counts as caught):")
    warnings = 0
    for lang, levels in report.levels.items():
        cells = [f"{level.value} {f.caught}/{f.examples} ({100 * f.recall:.0f}%)" for level, f in levels.items()]
        hard_total, hard_asked, hard_alerted = report.hard_negatives.get(lang, (0, 0, 0))
        q_total, q_asked, q_alerted = report.questions.get(lang, (0, 0, 0))
        print(
            f"  {lang}: "
            + ", ".join(cells)
            + f"; hard negatives: {hard_alerted} alerts, {hard_asked} questions of {hard_total}"
            + f"; FAQ questions: {q_alerted} alerts, {q_asked} questions of {q_total}"
        )
        for level in (Level.EMERGENCY, Level.CRISIS):
            figures = levels.get(level)
            if figures is not None and figures.examples and figures.caught < figures.examples:
                print(
                    f"  warning: {lang} {level.value} recall is {100 * figures.recall:.0f}%: "
                    f"{figures.examples - figures.caught} example(s) would be missed by the classifier alone"
                )
                warnings += 1
    return warnings


def _print_problems(problems: list[Problem], out: TextIO) -> None:
    for problem in problems:
        print(problem, file=out)


# -- ask -----------------------------------------------------------------------------------------
def reply_record(reply: Reply) -> dict[str, Any]:
    """The JSON shape of one answer, as `ask --json` prints it."""
    return {
        "lang": reply.lang,
        "triage": reply.level.value if reply.level else None,
        "confirm": reply.kind is Kind.CONFIRM,
        "faq_id": reply.topic,
        "score": reply.score,
        "candidates": list(reply.candidates),
        "answer": reply.text,
    }


def cmd_ask(args: argparse.Namespace) -> int:
    config, assistant = load_assistant(getattr(args, "config", None))
    default = _lang_option(assistant, args.lang, config.default_language)
    if args.batch:
        for line_no, item in _jsonl(args.batch):
            if item is None:
                print(json.dumps({"error": f"{args.batch}:{line_no}: not a JSON object with 'text'"}))
                continue
            reply = assistant.answer(str(item["text"]), str(item.get("lang") or default))
            print(json.dumps(reply_record(reply), ensure_ascii=False) if args.json else reply.text)
        return 0
    if args.text is None:
        raise UserError("give a message, or --batch FILE")
    reply = assistant.answer(args.text, default)
    if args.json:
        print(json.dumps(reply_record(reply), ensure_ascii=False, indent=2))
    else:
        print(reply.text)
        for row in reply.buttons:
            print("  " + " | ".join(f"[{b.label}]" for b in row))
    return 0


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """The objects of a JSONL file with their line numbers; None for a line that is not one."""
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror})") from None
    with handle:
        try:
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    yield line_no, None
                    continue
                yield line_no, item if isinstance(item, dict) and isinstance(item.get("text"), str) else None
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text") from None


# -- eval ----------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    rows: list[LabelledRow] = []
    bad: list[str] = []
    for path in args.files:
        for line_no, item in _jsonl(path):
            row = _labelled(item, f"{path.name}:{line_no}") if item else None
            if row is None:
                bad.append(f"{path}:{line_no}")
            else:
                rows.append(row)
    for where in bad:
        print(f"{where}: skipped, not a labelled row", file=sys.stderr)
    if not rows:
        # A gate that scored nothing must not pass.
        raise UserError(f"no labelled rows in {', '.join(map(str, args.files))}")
    config, assistant = load_assistant(getattr(args, "config", None))
    rows = [
        r if r.lang else LabelledRow(r.text, config.default_language, r.expect, r.triage, r.source, r.near_miss)
        for r in rows
    ]

    def predict(row: LabelledRow) -> Prediction:
        reply = assistant.answer(row.text, row.lang)
        return Prediction(reply.level, reply.topic, reply.kind is Kind.CONFIRM)

    scores = score_rows(rows, predict)
    _print_scores(scores, quiet=args.quiet)
    return 0 if _meets(scores, args) else 1


def _labelled(item: dict[str, Any], source: str) -> LabelledRow | None:
    """A labelled row from a JSONL object; None when a field has the wrong type or an unknown level."""
    lang, expect, triage = item.get("lang"), item.get("expect"), item.get("triage")
    if not all(value is None or isinstance(value, str) for value in (lang, expect, triage)):
        return None
    if triage is not None and triage not in {level.value for level in Level}:
        return None
    return LabelledRow(
        text=str(item["text"]),
        lang=lang or "",
        expect=expect,
        triage=Level(triage) if triage else None,
        source=source,
        near_miss=bool(item.get("near_miss")),
    )


def _print_scores(scores: dict[str, LanguageScore], quiet: bool) -> None:
    header = (
        "lang",
        "in-scope top-1",
        "fallback",
        "wrong",
        "emergency",
        "urgent",
        "crisis",
        "calm: alerts",
        "calm: asked",
        "near-miss: alerts",
        "near-miss: asked",
    )
    rows = [
        (
            lang,
            str(s.in_scope),
            str(s.out_of_scope),
            str(s.wrong),
            str(s.recall[Level.EMERGENCY]),
            str(s.recall[Level.URGENT]),
            str(s.recall[Level.CRISIS]),
            str(s.alerts),
            str(s.questions),
            str(s.near_miss_alerts),
            str(s.near_miss_questions),
        )
        for lang, s in scores.items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
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
            (s.wrong.percent, args.max_wrong, False, "wrong answers"),
            (s.false_positives.percent, args.max_false_positives, False, "alerts and questions on calm rows"),
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

    config, assistant = load_assistant(getattr(args, "config", None))
    lang = _lang_option(assistant, args.lang, config.default_language)
    return run_shell(config, assistant, lang)


# -- run -----------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from bot.telegram.service import preflight, run_service

    config, _ = check_config(getattr(args, "config", None))
    refusal = preflight(config)  # a missing token or webhook secret is said before seconds of loading
    if refusal is not None:
        print(f"aftercare run: {refusal}", file=sys.stderr)
        return EXIT_USAGE
    config, assistant = load_assistant(getattr(args, "config", None))
    return run_service(config, assistant)


# -- plan and invite -----------------------------------------------------------------------------
def _when(value: str, zone_name: str | None, default_zone: str) -> tuple[datetime, ZoneInfo]:
    """A treatment time from the command line, in `--tz` (or the clinic's zone) unless it names an offset."""
    try:
        zone = ZoneInfo(zone_name or default_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"unknown time zone '{zone_name}' (write it like Europe/Rome)") from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"'{value}' is not a date and time like \"2026-12-01 15:30\"") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)), zone


def _treatment(name: str, offered: Sequence[str]) -> str:
    """The treatment named on the command line, if the clinic offers it (it has a plan for each one it offers)."""
    if name not in TREATMENTS:
        raise UserError(f"unknown treatment '{name}'; known: {', '.join(TREATMENTS)}")
    if name not in offered:
        raise UserError(
            f"'{name}' is not among this clinic's treatments ({', '.join(offered)}); see reminders.treatments"
        )
    return name


def cmd_plan(args: argparse.Namespace) -> int:
    config, assistant = load_assistant(getattr(args, "config", None))
    plans = assistant.content.plans
    if plans is None:
        raise UserError("this content has no recovery plans (faq/plans.yaml)")
    treatment = _treatment(args.treatment, tuple(plans.plans))
    treated_at, zone = _when(args.at, args.tz, config.timezone)
    lang = _lang_option(assistant, args.lang, config.default_language)
    timing = config.reminders.timing
    items = preview(
        plans,
        treatment=treatment,
        treated_at=treated_at,
        zone=zone,
        lang=lang if lang in plans.texts else next(iter(plans.texts)),
        facts=assistant.facts(lang),
        quiet=timing.quiet,
        default_late=timing.default_late,
    )
    if args.json:
        print(
            json.dumps(
                [{"step": i.step, "due": i.due.isoformat(), "text": i.text} for i in items],
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    for item in items:
        print(f"{item.due:%a %Y-%m-%d %H:%M %Z}  [{item.step}]")
        print("  " + item.text.replace("\n", "\n  "))
        print()
    return 0


def cmd_invite(args: argparse.Namespace) -> int:
    from bot.core.invites import InviteCodec
    from bot.core.recovery_flow import invite_link
    from bot.delivery.qr import qr_png

    config, _ = check_config(getattr(args, "config", None))
    if config.invite_secret is None:
        raise UserError("set AFTERCARE_INVITE_SECRET (or invite_secret in the config): invites are signed with it")
    username = config.telegram.bot_username
    if not username:
        raise UserError("set telegram.bot_username in the config (the @name of your bot): links point to it")
    if not 1 <= args.count <= 1000:
        raise UserError("--count must be between 1 and 1000")
    treatment = _treatment(args.treatment, config.reminders.treatments)
    treated_at, _zone = _when(args.at, args.tz, config.timezone)
    codec = InviteCodec(config.invite_secret.get_secret_value())
    records = []
    for number in range(1, args.count + 1):
        try:
            invite = codec.new(
                treatment, treated_at, valid_for=timedelta(days=config.reminders.invite_valid_days), ref=args.ref
            )
        except ValueError as exc:
            raise UserError(str(exc)) from None
        payload = codec.encode(invite)
        link = invite_link(username, payload)
        record = {"link": link, "payload": payload, "expires": invite.expires.isoformat()}
        if args.qr is not None:
            target = (
                args.qr
                if args.count == 1 or number == 1
                else args.qr.with_name(f"{args.qr.stem}-{number}{args.qr.suffix or '.png'}")
            )
            try:
                target.write_bytes(qr_png(link))
            except OSError as exc:
                raise UserError(f"{target}: cannot be written ({exc.strerror})") from None
            record["qr"] = str(target)
        records.append(record)
    if args.json:
        print(json.dumps(records[0] if args.count == 1 else records, indent=2))
    else:
        for record in records:
            print(record["link"] + (f"  (QR: {record['qr']})" if "qr" in record else ""))
        print(f"valid until {records[0]['expires']}; each link enrols the first patient who opens it")
    return 0


# -- init ----------------------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    import shutil

    from bot.config import DEFAULT_CONTENT_DIR, demo_config_text

    folder: Path = args.folder
    config_file = folder / "config.yaml"
    content = folder / "faq"
    if config_file.exists() or content.exists():
        raise UserError(f"{folder} already has a config.yaml or faq/: nothing was overwritten")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copytree(DEFAULT_CONTENT_DIR, content)
        config_file.write_text(demo_config_text(), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{folder}: cannot be written ({exc.strerror})") from None
    print(f"wrote {config_file} and {content}/")
    print(f"next: edit the clinic: section of {config_file}, then run: aftercare --config {config_file} check")
    return 0
