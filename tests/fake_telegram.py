"""A small, real, local fake of the Telegram Bot API, served over HTTP.

Start it, point a bot's Bot API base URL at ``fake.base_url`` (PTB appends the token, so requests
arrive at ``/bot<TOKEN>/<method>``), drive it like a user would (``send_text``, ``press_button``,
...) and assert on what the bot called (``wait_for``, ``calls_to``, ``messages_to``).

It speaks the wire format PTB 22 uses: every parameter arrives as a form field
(``application/x-www-form-urlencoded``, or ``multipart/form-data`` when files are uploaded) whose
value is the raw string for ``str`` values and ``json.dumps(value)`` for everything else. Query
strings and JSON bodies are accepted too, like the real server does.

Only the standard library is used, so the server can serve a bot running in another process
(``aftercare run``) as well as a PTB ``Bot``/``Application`` running in the test's event loop.

Example::

    with FakeTelegram() as tg:
        bot = telegram.Bot(tg.token, base_url=tg.base_url)
        ...
        tg.send_text(42, "/start")
        call = tg.wait_for_sync("sendMessage", lambda c: c.params["chat_id"] == 42)
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import html
import itertools
import json
import math
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Call", "ConnectionDropped", "FakeTelegram", "UploadedFile"]

JSONDict = dict[str, Any]

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_CALLBACK_ANSWER_LENGTH = 200

# Parameters whose values are always plain strings, even when they look like JSON ("123", "true").
_STRING_PARAMS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "inline_message_id",
        "url",
        "secret_token",
        "ip_address",
        "language_code",
        "action",
        "description",
        "short_description",
        "name",
        "title",
        "emoji",
        "message_effect_id",
        "business_connection_id",
        "photo",
        "document",
        "sticker",
        "voice",
        "audio",
        "video",
        "animation",
        "video_note",
        "thumbnail",
        "file_id",
        "phone_number",
        "first_name",
        "last_name",
        "vcard",
        "address",
        "foursquare_id",
        "foursquare_type",
        "google_place_id",
        "google_place_type",
        "question",
        "explanation",
        "performer",
        "custom_emoji_id",
        "sticker_set_name",
    }
)

# Update kinds that Telegram does not deliver unless they are asked for in allowed_updates.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)

_INLINE_BUTTON_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)

_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)

# Message fields that belong to the envelope, not the content (dropped when copying/forwarding).
_ENVELOPE_KEYS = frozenset(
    {
        "message_id",
        "from",
        "chat",
        "date",
        "reply_to_message",
        "edit_date",
        "reply_markup",
        "message_thread_id",
        "is_topic_message",
        "forward_origin",
    }
)

# What Telegram answers for a status when a test does not say (fail()).
_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request: chat not found",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

# Methods that put a message into a chat or change one: the ones Telegram's flood control counts.
# sendChatAction is deliberately absent (Telegram does not count it against the message limits).
_LIMITED_METHODS = frozenset(
    {
        "sendmessage",
        "sendphoto",
        "senddocument",
        "sendsticker",
        "sendvoice",
        "sendaudio",
        "sendvideo",
        "sendanimation",
        "sendlocation",
        "copymessage",
        "forwardmessage",
        "editmessagetext",
        "editmessagereplymarkup",
    }
)

_COMMAND_RE = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")


# ----------------------------------------------------------------------------------------------
# Public records
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart/form-data request."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Call:
    """One Bot API request as the fake received and answered it."""

    method: str
    params: JSONDict
    time: float
    http_method: str = "POST"
    status: int = 200
    response: JSONDict = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)
    seq: int = 0
    # The connection was closed without an answer (drop()): the bot never saw ``status``/``response``.
    # ``status`` is 0 when the method was not performed, 200 when it was (``after_processing=True``).
    dropped: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def result(self) -> Any:
        return self.response.get("result")

    def __str__(self) -> str:
        params = json.dumps(self.params, ensure_ascii=False, default=str)
        if len(params) > 300:
            params = params[:297] + "..."
        dropped = " (connection dropped)" if self.dropped else ""
        return f"#{self.seq} {self.method} -> {self.status}{dropped} {params}"


class ConnectionDropped(ConnectionResetError):
    """Raised by the in-process entry point (``FakeTelegram._dispatch``) where the HTTP server would
    close the connection without answering (``drop()``): a request layer that calls the fake
    without sockets sees the same "no response" failure a real socket would give it."""


class _ApiError(Exception):
    def __init__(self, status: int, description: str, parameters: JSONDict | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def payload(self) -> JSONDict:
        body: JSONDict = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad_request(description: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {description}")


FaultKind = Literal["fail", "drop", "stall"]


@dataclass
class _Fault:
    """One scripted fault: applies to the next ``times`` matching calls (None: every one, until cleared)."""

    kind: FaultKind
    method: str  # lower-case method name, or "*" for any method
    chat_id: int | str | None  # None: any request; otherwise only requests whose chat_id equals it
    times: int | None
    status: int = 0
    description: str = ""
    parameters: JSONDict | None = None
    html: bool = False
    after_processing: bool = False
    seconds: float = 0.0

    def matches(self, method: str, chat_id: int | str | None) -> bool:
        return self.method in ("*", method) and (self.chat_id is None or self.chat_id == chat_id)

    def __str__(self) -> str:
        where = "" if self.chat_id is None else f" chat_id={self.chat_id}"
        what = {
            "fail": f"{self.status}{' html' if self.html else ''}",
            "drop": "after processing" if self.after_processing else "before processing",
            "stall": f"{self.seconds:g}s{' after processing' if self.after_processing else ''}",
        }[self.kind]
        times = "always" if self.times is None else f"x{self.times}"
        return f"{self.kind} {self.method}{where}: {what} ({times})"


@dataclass
class _Limits:
    per_bot_per_second: int
    per_chat_per_second: float
    chat_burst: int
    per_group_per_minute: int


@dataclass
class _Reply:
    """What the HTTP layer writes back: a JSON payload, an HTML page instead of it, or nothing at all."""

    status: int
    payload: JSONDict
    html: str | None = None
    drop: bool = False


class _Dropped(Exception):
    """Internal: answer this request by closing the connection."""


def _chat_key(raw: Any) -> int | str | None:
    """A request's chat_id as fault rules and flood limits compare it: an int when it parses as one."""
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        text = raw.strip()
        try:
            return int(text)
        except ValueError:
            return text or None
    return None


def _nginx_page(status: int) -> str:
    """The HTML error page Telegram's nginx front end answers with when the Bot API backend is down."""
    try:
        title = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        title = str(status)
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n"
    )


@dataclass
class _Pending:
    update: JSONDict
    sticky: bool = False  # survives offset confirmation until handed out once
    handed_out: bool = False

    @property
    def update_id(self) -> int:
        return int(self.update["update_id"])


# ----------------------------------------------------------------------------------------------
# Text formatting (parse_mode) – enough of Telegram's parsers to catch malformed markup
# ----------------------------------------------------------------------------------------------


def _u16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


_HTML_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_HTML_TAG_RE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s[^>]*)?)>")
_HTML_ENTITY_RE = re.compile(r"&(#\d+|#[xX][0-9a-fA-F]+|lt|gt|amp|quot);")
_HTML_ATTR_RE = re.compile(r"""([A-Za-z-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"']+))""")


def _parse_html(source: str) -> tuple[str, list[JSONDict]]:
    out: list[str] = []
    length = 0  # UTF-16 length of the output so far
    stack: list[tuple[str, int, JSONDict]] = []
    entities: list[JSONDict] = []
    i = 0
    while i < len(source):
        ch = source[i]
        if ch == "<":
            match = _HTML_TAG_RE.match(source, i)
            offset = len(source[:i].encode())
            if match is None:
                raise _bad_request(f"can't parse entities: Unsupported start tag at byte offset {offset}")
            closing, name, attrs = match.group(1), match.group(2).lower(), match.group(3)
            if name not in _HTML_ENTITY_TYPES:
                raise _bad_request(f'can\'t parse entities: Unsupported start tag "{name}" at byte offset {offset}')
            if closing:
                if not stack or stack[-1][0] != name:
                    raise _bad_request(
                        f"can't parse entities: Unmatched end tag at byte offset {offset}, expected \"</"
                        f'{stack[-1][0] if stack else ""}>", found "</{name}>"'
                    )
                _, start, opened = stack.pop()
                if length > start and opened:
                    opened.update(offset=start, length=length - start)
                    entities.append(opened)
            else:
                parsed = {
                    m.group(1).lower(): m.group(2) or m.group(3) or m.group(4) or ""
                    for m in _HTML_ATTR_RE.finditer(attrs)
                }
                entity: JSONDict = {"type": _HTML_ENTITY_TYPES[name]}
                if name == "a":
                    entity["url"] = html.unescape(parsed.get("href", ""))
                elif name == "span" and parsed.get("class") != "tg-spoiler":
                    raise _bad_request(
                        f'can\'t parse entities: Tag "span" must have class "tg-spoiler" at byte offset {offset}'
                    )
                elif name == "tg-emoji":
                    entity["custom_emoji_id"] = parsed.get("emoji-id", "")
                elif name == "code" and stack and stack[-1][0] == "pre" and "class" in parsed:
                    stack[-1][2]["language"] = parsed["class"].removeprefix("language-")
                    entity = {}
                elif name == "blockquote" and "expandable" in attrs:
                    entity["type"] = "expandable_blockquote"
                stack.append((name, length, entity))
            i = match.end()
            continue
        if ch == "&":
            match = _HTML_ENTITY_RE.match(source, i)
            if match is not None:
                piece = html.unescape(match.group(0))
                out.append(piece)
                length += _u16(piece)
                i = match.end()
                continue
        out.append(ch)
        length += _u16(ch)
        i += 1
    if stack:
        raise _bad_request(f"can't parse entities: Can't find end tag corresponding to start tag \"{stack[-1][0]}\"")
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


_MDV2_RESERVED = set("_*[]()~`>#+-=|{}.!")
_MDV2_MARKERS = {"*": "bold", "_": "italic", "__": "underline", "~": "strikethrough", "||": "spoiler"}


def _parse_markdown_v2(source: str) -> tuple[str, list[JSONDict]]:
    out: list[str] = []
    length = 0
    stack: list[tuple[str, int, int]] = []  # (marker, utf16 start, byte offset)
    entities: list[JSONDict] = []
    i = 0

    def byte_offset(index: int) -> int:
        return len(source[:index].encode())

    def emit(piece: str) -> None:
        nonlocal length
        out.append(piece)
        length += _u16(piece)

    while i < len(source):
        ch = source[i]
        if ch == "\\" and i + 1 < len(source):
            emit(source[i + 1])
            i += 2
            continue
        if ch == "`":
            fence = "```" if source.startswith("```", i) else "`"
            end = i + len(fence)
            body: list[str] = []
            while end < len(source) and not source.startswith(fence, end):
                if source[end] == "\\" and end + 1 < len(source):
                    end += 1
                body.append(source[end])
                end += 1
            if end >= len(source):
                raise _bad_request(
                    f"can't parse entities: Can't find end of Pre entity at byte offset {byte_offset(i)}"
                )
            text = "".join(body)
            entity: JSONDict = {"type": "code" if fence == "`" else "pre"}
            if fence == "```" and "\n" in text:
                first, rest = text.split("\n", 1)
                if first and " " not in first:
                    entity["language"] = first
                    text = rest
            entity.update(offset=length, length=_u16(text))
            if text:
                entities.append(entity)
            emit(text)
            i = end + len(fence)
            continue
        if ch == "[":
            stack.append(("[", length, byte_offset(i)))
            i += 1
            continue
        if ch == "]":
            if not stack or stack[-1][0] != "[":
                raise _bad_request(
                    "can't parse entities: Character ']' is reserved and must be escaped with the preceding '\\'"
                )
            _, start, _ = stack.pop()
            if source.startswith("(", i + 1):
                close = source.find(")", i + 2)
                if close < 0:
                    raise _bad_request(
                        f"can't parse entities: Can't find end of a URL at byte offset {byte_offset(i + 1)}"
                    )
                url = source[i + 2 : close].replace("\\)", ")").replace("\\\\", "\\")
                if length > start:
                    entities.append({"type": "text_link", "offset": start, "length": length - start, "url": url})
                i = close + 1
            else:
                i += 1
            continue
        if ch == ">" and (i == 0 or source[i - 1] == "\n"):
            i += 1  # blockquote marker; the entity itself is not tracked
            continue
        marker = source[i : i + 2] if source[i : i + 2] in ("__", "||") else ch
        if marker in _MDV2_MARKERS:
            if stack and stack[-1][0] == marker:
                _, start, _ = stack.pop()
                if length > start:
                    entities.append({"type": _MDV2_MARKERS[marker], "offset": start, "length": length - start})
            else:
                stack.append((marker, length, byte_offset(i)))
            i += len(marker)
            continue
        if ch in _MDV2_RESERVED:
            raise _bad_request(
                f"can't parse entities: Character '{ch}' is reserved and must be escaped with the preceding '\\'"
            )
        emit(ch)
        i += 1
    if stack:
        marker, _, offset = stack[-1]
        kind = "TextUrl" if marker == "[" else _MDV2_MARKERS[marker].capitalize()
        raise _bad_request(f"can't parse entities: Can't find end of {kind} entity at byte offset {offset}")
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _parse_markdown_legacy(source: str) -> tuple[str, list[JSONDict]]:
    out: list[str] = []
    length = 0
    entities: list[JSONDict] = []
    i = 0
    kinds = {"*": "bold", "_": "italic", "`": "code", "```": "pre"}
    while i < len(source):
        ch = source[i]
        marker = "```" if source.startswith("```", i) else ch
        if marker in kinds:
            end = source.find(marker, i + len(marker))
            if end < 0:
                offset = len(source[:i].encode())
                raise _bad_request(
                    f"can't parse entities: Can't find end of the entity starting at byte offset {offset}"
                )
            text = source[i + len(marker) : end]
            if text:
                entities.append({"type": kinds[marker], "offset": length, "length": _u16(text)})
            out.append(text)
            length += _u16(text)
            i = end + len(marker)
            continue
        if ch == "[":
            match = re.compile(r"\[([^\]]*)\]\(([^)]*)\)").match(source, i)
            if match:
                text = match.group(1)
                if text:
                    entities.append(
                        {"type": "text_link", "offset": length, "length": _u16(text), "url": match.group(2)}
                    )
                out.append(text)
                length += _u16(text)
                i = match.end()
                continue
        out.append(ch)
        length += _u16(ch)
        i += 1
    return "".join(out), entities


def _format_text(text: str, parse_mode: str | None, entities: Any) -> tuple[str, list[JSONDict]]:
    mode = (parse_mode or "").lower()
    if mode == "html":
        plain, parsed = _parse_html(text)
    elif mode == "markdownv2":
        plain, parsed = _parse_markdown_v2(text)
    elif mode == "markdown":
        plain, parsed = _parse_markdown_legacy(text)
    elif mode:
        raise _bad_request(f"unsupported parse_mode {parse_mode!r}")
    else:
        plain, parsed = text, list(entities or [])
    # Telegram trims surrounding whitespace; entity offsets shift accordingly.
    stripped = plain.lstrip()
    shift = _u16(plain) - _u16(stripped)
    plain = stripped.rstrip()
    limit = _u16(plain)
    result: list[JSONDict] = []
    for entity in parsed:
        start = max(0, entity["offset"] - shift)
        end = min(limit, entity["offset"] + entity["length"] - shift)
        if end > start:
            result.append({**entity, "offset": start, "length": end - start})
    return plain, result


def _command_entities(text: str) -> list[JSONDict]:
    entities = []
    for match in _COMMAND_RE.finditer(text):
        entities.append({"type": "bot_command", "offset": _u16(text[: match.start()]), "length": _u16(match.group())})
    return entities


# ----------------------------------------------------------------------------------------------
# HTTP plumbing
# ----------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeTelegram) -> None:
        self.fake = fake
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 120  # idle keep-alive connections are dropped after this
    disable_nagle_algorithm = True  # otherwise every response waits ~40 ms for a delayed ACK

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self, verb: str) -> None:
        body = self._read_body()
        url = urlsplit(self.path)
        reply = self.server.fake._answer(verb, url.path, url.query, self.headers.get("Content-Type", ""), body)
        if reply.drop:
            # Close without a single byte of response, as when Telegram's side times out or resets:
            # the client sees the connection end (httpx: RemoteProtocolError, urllib: RemoteDisconnected).
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.html is not None:
            data, content_type = reply.html.encode(), "text/html"
        else:
            data, content_type = json.dumps(reply.payload, ensure_ascii=False).encode(), "application/json"
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (cancelled long poll)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _coerce(name: str, value: Any) -> Any:
    """Turn a wire value into what Telegram would understand it as."""
    if not isinstance(value, str) or name in _STRING_PARAMS:
        return value
    stripped = value.strip()
    if not stripped:
        return value
    if stripped[0] in "[{" or stripped in ("true", "false", "null") or re.fullmatch(r"-?\d+(\.\d+)?", stripped):
        try:
            return json.loads(stripped)
        except ValueError as exc:
            if stripped[0] in "[{":
                raise _bad_request(f"can't parse {name} JSON object") from exc
    return value


def _parse_request(query: str, content_type: str, body: bytes) -> tuple[JSONDict, dict[str, UploadedFile]]:
    raw: JSONDict = dict(parse_qsl(query, keep_blank_values=True))
    files: dict[str, UploadedFile] = {}
    kind = content_type.split(";")[0].strip().lower()
    if body:
        if kind == "application/json":
            try:
                decoded = json.loads(body)
            except ValueError as exc:
                raise _bad_request("can't parse JSON encoded request body") from exc
            if not isinstance(decoded, dict):
                raise _bad_request("JSON request body must be an object")
            raw.update(decoded)
        elif kind == "multipart/form-data":
            message = BytesParser(policy=policy.HTTP).parsebytes(
                b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
            )
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if not name:
                    continue
                decoded = part.get_payload(decode=True)
                payload = decoded if isinstance(decoded, bytes) else b""
                filename = part.get_filename()
                if filename is not None or part.get_content_type() not in ("text/plain",):
                    files[str(name)] = UploadedFile(
                        filename=filename or str(name), content_type=part.get_content_type(), data=payload
                    )
                else:
                    raw[str(name)] = payload.decode(part.get_content_charset() or "utf-8")
        else:  # application/x-www-form-urlencoded (and anything else that looks like it)
            raw.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return {name: _coerce(name, value) for name, value in raw.items()}, files


# ----------------------------------------------------------------------------------------------
# The fake
# ----------------------------------------------------------------------------------------------


class FakeTelegram:
    """A local, in-memory Telegram Bot API server. See the module docstring."""

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",
        *,
        bot_username: str = "aftercare_test_bot",
        bot_first_name: str = "Aftercare Test Bot",
        host: str = "127.0.0.1",
        port: int = 0,
        strict_chats: bool = False,
        auto_deliver_webhook: bool = True,
        webhook_retry_delay: float = 0.2,
        default_staff_user_id: int = 424242,
    ) -> None:
        self.token = token
        self.host = host
        self.port = port
        self.strict_chats = strict_chats
        self.auto_deliver_webhook = auto_deliver_webhook
        self.webhook_retry_delay = webhook_retry_delay
        self.default_staff_user_id = default_staff_user_id
        bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 123456
        self.bot_user: JSONDict = {
            "id": bot_id,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._reset_state()

    # -- lifecycle ---------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self._calls: list[Call] = []
        self._consumed: set[int] = set()
        self._call_seq = itertools.count(1)
        self._deliveries: list[JSONDict] = []
        self._pending: list[_Pending] = []
        self._next_update_id = 100001
        self._allowed_updates: list[str] | None = None
        self._poll_generation = 0
        self._parked_polls = 0  # long polls currently waiting for updates
        self._messages: dict[tuple[int, int], JSONDict] = {}
        self._message_counters: dict[int, int] = {}
        self._chats: dict[int, JSONDict] = {}
        self._migrated: dict[int, int] = {}
        self._blocked: dict[int, str] = {}
        self._faults: list[_Fault] = []  # fail/drop/stall rules, in the order they were scripted
        self._delays: dict[str, float] = {}
        self._token_revoked = False
        self._limits: _Limits | None = None
        self._reset_limit_windows()
        self._flood_errors: Counter[int | str | None] = Counter()
        self._callback_queries: dict[str, bool] = {}  # id -> answered
        self._callback_ids = itertools.count(4_000_000_000_000_000_001)
        self._file_ids = itertools.count(1)
        self._commands: dict[tuple[str, str], list[JSONDict]] = {}
        self._menu_buttons: dict[int | None, JSONDict] = {}
        self._webhook: JSONDict = {}
        self.webhook_attempts: list[JSONDict] = []

    def start(self) -> FakeTelegram:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        serve = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-telegram-http", daemon=True
        )
        deliver = threading.Thread(target=self._webhook_loop, name="fake-telegram-webhook", daemon=True)
        self._threads = [serve, deliver]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server = None
        self._threads = []

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeTelegram:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """Bot API base URL without the token, e.g. ``http://127.0.0.1:PORT/bot``."""
        return f"http://{self.host}:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://{self.host}:{self.port}/file/bot"

    @property
    def api_url(self) -> str:
        """Base URL including the token: ``<base_url><token>``; append ``/<method>``."""
        return f"{self.base_url}{self.token}"

    # -- recording / assertions ---------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.method.lower() == method.lower()]

    def messages_to(self, chat_id: int) -> list[JSONDict]:
        """Everything the bot delivered to ``chat_id``, in order.

        One dict per successful sendMessage/send*/copyMessage/forwardMessage/editMessageText/
        editMessageReplyMarkup: ``method, chat_id, message_id, text`` (plain text as Telegram
        shows it; the caption for media), ``raw_text`` (as sent, before parse_mode), ``parse_mode``,
        ``reply_markup`` (as sent, any keyboard type, or None), ``message`` (the Message object the
        fake returned; ``{"message_id": ...}`` for copyMessage), ``time`` and ``response_lost`` (True
        when the message was delivered but the connection was then dropped, see :meth:`drop`).
        """
        with self._lock:
            return [dict(d) for d in self._deliveries if d["chat_id"] == chat_id]

    def deliveries(self, chat_id: int | None = None) -> list[JSONDict]:
        """Every new message the bot put into a chat (``chat_id`` only, when given), in order.

        That is each successful sendMessage/sendPhoto/send*/copyMessage/forwardMessage – edits are
        not new messages and are left out. Entries look like :meth:`messages_to`'s. A message whose
        answer was lost (``drop(..., after_processing=True)``) counts: the user did get it, which is
        what end-to-end tests that look for duplicate sends after a retry need to see.
        """
        with self._lock:
            return [
                dict(d)
                for d in self._deliveries
                if not str(d["method"]).startswith("edit") and (chat_id is None or d["chat_id"] == chat_id)
            ]

    def delivery_count(self, chat_id: int, text: str) -> int:
        """How many times a message with exactly this (plain, as shown) text/caption reached ``chat_id``."""
        return sum(1 for d in self.deliveries(chat_id) if d["text"] == text)

    def duplicate_deliveries(self, chat_id: int | None = None) -> dict[tuple[int, str], int]:
        """``{(chat_id, text): count}`` for every text that reached the same chat more than once.

        Only messages with a text or caption are compared (two captionless photos are not duplicates).
        """
        counts = Counter((int(d["chat_id"]), str(d["text"])) for d in self.deliveries(chat_id) if d["text"])
        return {key: n for key, n in counts.items() if n > 1}

    def assert_no_duplicate_deliveries(self, chat_id: int | None = None) -> None:
        """Fail (listing them) if any chat got the same text twice, e.g. because a retry re-sent it."""
        duplicates = self.duplicate_deliveries(chat_id)
        if duplicates:
            listed = "\n".join(f"  {n}x to {cid}: {text[:120]!r}" for (cid, text), n in duplicates.items())
            raise AssertionError(f"duplicate deliveries:\n{listed}\n{self._recent_calls()}")

    def last_message_to(self, chat_id: int) -> JSONDict:
        messages = self.messages_to(chat_id)
        if not messages:
            raise AssertionError(f"nothing was delivered to chat {chat_id}\n{self._recent_calls()}")
        return messages[-1]

    def history(self, chat_id: int) -> list[JSONDict]:
        """The chat as a user would see it now: user and bot messages by message_id, after edits/deletes."""
        with self._lock:
            found = [copy.deepcopy(m) for (cid, _), m in self._messages.items() if cid == chat_id]
        return sorted(found, key=lambda m: m["message_id"])

    def message(self, chat_id: int, message_id: int) -> JSONDict:
        """The stored (current) Message object."""
        with self._lock:
            try:
                return copy.deepcopy(self._messages[(chat_id, message_id)])
            except KeyError:
                raise KeyError(f"no message {message_id} in chat {chat_id}") from None

    def commands(self, scope: JSONDict | None = None, language_code: str = "") -> list[JSONDict]:
        """Commands stored by setMyCommands for that scope (default scope if None) and language."""
        with self._lock:
            return copy.deepcopy(self._commands.get((self._scope_key(scope), language_code or ""), []))

    def clear(self) -> None:
        """Forget recorded calls, deliveries and flood-error counts (chats, messages, queued updates and
        settings such as scripted faults and flood limits stay)."""
        with self._lock:
            self._calls.clear()
            self._consumed.clear()
            self._deliveries.clear()
            self._flood_errors.clear()
            self.webhook_attempts.clear()

    def reset(self) -> None:
        """Forget everything, as if freshly constructed (the server keeps running)."""
        with self._cond:
            self._reset_state()
            self._cond.notify_all()

    def _match(self, method: str | None, predicate: Callable[[Call], bool] | None, since: float | None) -> Call | None:
        for call in self._calls:
            if call.seq in self._consumed:
                continue
            if method is not None and call.method.lower() != method.lower():
                continue
            if since is not None and call.time < since:
                continue
            if predicate is not None and not predicate(call):
                continue
            self._consumed.add(call.seq)
            return call
        return None

    def _recent_calls(self, limit: int = 25) -> str:
        with self._lock:
            recent = self._calls[-limit:]
        if not recent:
            return "no Bot API calls were received"
        return f"last {len(recent)} Bot API calls:\n" + "\n".join(f"  {c}" for c in recent)

    def _timeout_error(self, method: str | None, timeout: float) -> AssertionError:
        return AssertionError(
            f"no matching {method or 'Bot API'} call within {timeout:.1f}s (each call is returned by wait_for "
            f"at most once)\n{self._recent_calls()}"
        )

    async def wait_for(
        self,
        method: str | None,
        predicate: Callable[[Call], bool] | None = None,
        timeout: float = 5.0,
        *,
        since: float | None = None,
    ) -> Call:
        """Wait until a call of ``method`` (None: any) matching ``predicate`` arrives and return it.

        Calls already received count. Each call is handed out at most once, so consecutive
        ``wait_for("sendMessage")`` return consecutive messages. ``since`` (a ``time.time()``)
        ignores older calls. Raises AssertionError listing recent calls on timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                call = self._match(method, predicate, since)
            if call is not None:
                return call
            if time.monotonic() >= deadline:
                raise self._timeout_error(method, timeout)
            await asyncio.sleep(0.01)

    def wait_for_sync(
        self,
        method: str | None,
        predicate: Callable[[Call], bool] | None = None,
        timeout: float = 5.0,
        *,
        since: float | None = None,
    ) -> Call:
        """Blocking version of :meth:`wait_for` (for sync tests; do not call it from the event loop
        that runs the bot)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                call = self._match(method, predicate, since)
                if call is not None:
                    return call
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout_error(method, timeout)
                self._cond.wait(min(remaining, 0.1))

    @property
    def is_polling(self) -> bool:
        """True while a getUpdates long poll is parked in the fake, waiting for updates."""
        with self._lock:
            return self._parked_polls > 0

    async def wait_for_polling(self, timeout: float = 10.0) -> None:
        """Wait until the bot is parked in a getUpdates long poll (it has started and drained the queue).

        Calls are recorded when they complete, so ``wait_for("getUpdates")`` would wait for the
        first long poll to time out; use this to know that a freshly started bot is listening.
        """
        deadline = time.monotonic() + timeout
        while not self.is_polling:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the bot did not start long polling within {timeout:.1f}s\n{self._recent_calls()}"
                )
            await asyncio.sleep(0.01)

    def wait_for_polling_sync(self, timeout: float = 10.0) -> None:
        """Blocking version of :meth:`wait_for_polling`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._parked_polls == 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"the bot did not start long polling within {timeout:.1f}s\n{self._recent_calls()}"
                    )
                self._cond.wait(min(remaining, 0.1))

    async def wait_for_message(self, chat_id: int, timeout: float = 5.0) -> Call:
        """Wait for the next sendMessage to ``chat_id``."""
        return await self.wait_for("sendMessage", lambda c: c.params.get("chat_id") == chat_id, timeout)

    # -- failure injection ----------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        description: str = "Too Many Requests: retry after 1",
        retry_after: int | None = None,
        migrate_to_chat_id: int | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` calls of ``method`` fail with this Bot API error (queued after earlier ones).

        With the default 429 and no explicit ``retry_after``, ``parameters.retry_after`` is taken
        from the description ("retry after N"), like Telegram sends it. See :meth:`fail` for the
        general form (per chat, HTML bodies, status-dependent default descriptions).
        """
        parameters: JSONDict = {}
        if retry_after is None and status == 429:
            found = re.search(r"retry after (\d+)", description)
            retry_after = int(found.group(1)) if found else None
        if retry_after is not None:
            parameters["retry_after"] = retry_after
        if migrate_to_chat_id is not None:
            parameters["migrate_to_chat_id"] = migrate_to_chat_id
        self._add_fault(
            _Fault(
                "fail",
                method.lower(),
                None,
                times,
                status=status,
                description=description,
                parameters=parameters or None,
            )
        )

    def fail(
        self,
        method: str,
        *,
        chat_id: int | str | None = None,
        status: int = 500,
        description: str | None = None,
        retry_after: int | None = None,
        migrate_to_chat_id: int | None = None,
        times: int | None = 1,
        html: bool = False,
    ) -> None:
        """The next ``times`` calls of ``method`` (``"*"``: any method) fail with HTTP ``status``;
        the method is not performed (nothing is stored or delivered).

        ``chat_id`` limits the fault to requests addressed to that chat (their ``chat_id`` parameter,
        compared as an int when it parses as one), so one recipient can fail while others get through.
        ``times=None`` fails every matching call until :meth:`clear_faults`.

        ``description`` defaults to what Telegram says for that status ("Internal Server Error",
        "Bad Gateway", "Bad Request: chat not found", "Forbidden: bot was blocked by the user",
        "Unauthorized", ...). A 429 gets ``parameters.retry_after`` (``retry_after``, else the N of a
        "retry after N" description, else 1) and "Too Many Requests: retry after N".

        ``html=True`` answers with nginx's HTML error page (``text/html``) instead of JSON, which is
        what the bot gets when Telegram's front end cannot reach the Bot API backend (502/504); only
        the HTTP server can do that – the in-process ``_dispatch`` returns the JSON equivalent.

        Faults are taken in the order they were scripted (together with :meth:`fail_next` and
        :meth:`drop`); a call takes at most one of them, plus at most one :meth:`stall`.
        """
        parameters: JSONDict = {}
        if status == 429:
            if retry_after is None:
                found = re.search(r"retry after (\d+)", description or "")
                retry_after = int(found.group(1)) if found else 1
            description = description or f"Too Many Requests: retry after {retry_after}"
        if description is None:
            try:
                description = _DEFAULT_DESCRIPTIONS.get(status) or HTTPStatus(status).phrase
            except ValueError:
                description = f"Error {status}"
        if retry_after is not None:
            parameters["retry_after"] = retry_after
        if migrate_to_chat_id is not None:
            parameters["migrate_to_chat_id"] = migrate_to_chat_id
        self._add_fault(
            _Fault(
                "fail",
                method.lower(),
                _chat_key(chat_id),
                times,
                status=status,
                description=description,
                parameters=parameters or None,
                html=html,
            )
        )

    def drop(
        self, method: str, *, chat_id: int | str | None = None, times: int | None = 1, after_processing: bool = False
    ) -> None:
        """The next ``times`` matching calls get no answer at all: the server closes the connection.

        Without ``after_processing`` the method is not performed (the request was lost on the way).
        With ``after_processing=True`` it IS performed first – the message is delivered and shows up
        in :meth:`messages_to`/:meth:`deliveries` with ``response_lost=True`` – and only the answer is
        lost: Telegram's "the request timed out after it was sent" case, where a bot that blindly
        retries sends the message twice. PTB raises ``NetworkError`` either way. ``chat_id``,
        ``"*"`` and ``times=None`` work as in :meth:`fail`; the recorded Call has ``dropped=True``.
        """
        self._add_fault(_Fault("drop", method.lower(), _chat_key(chat_id), times, after_processing=after_processing))

    def stall(
        self,
        method: str,
        *,
        seconds: float,
        chat_id: int | str | None = None,
        times: int | None = 1,
        after_processing: bool = False,
    ) -> None:
        """The next ``times`` matching calls wait ``seconds`` before they are answered (unlike
        :meth:`delay`, which slows every call of a method).

        By default the wait comes before the method is performed, so a client that gives up early
        (PTB ``TimedOut``) still has its message delivered once the stall is over – as with a slow
        Telegram. ``after_processing=True`` performs the method at once and holds back only the
        answer. A stall combines with a :meth:`fail`/:meth:`drop` fault on the same call (a slow 502).
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._add_fault(
            _Fault(
                "stall", method.lower(), _chat_key(chat_id), times, seconds=seconds, after_processing=after_processing
            )
        )

    def _add_fault(self, fault: _Fault) -> None:
        if fault.times is not None and fault.times < 1:
            raise ValueError(f"times must be >= 1 (or None for every call), not {fault.times}")
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Forget every scripted fail/fail_next/drop/stall that has not fired yet (``delay`` stays)."""
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> list[str]:
        """Scripted faults that have not (all) fired yet, readable – handy in assertion messages."""
        with self._lock:
            return [str(f) for f in self._faults]

    def revoke_token(self) -> None:
        """From now on every request – parked long polls included – gets 401 Unauthorized, as after the
        token is revoked in @BotFather (PTB raises ``InvalidToken``). Requests are still recorded."""
        with self._cond:
            self._token_revoked = True
            self._cond.notify_all()

    def restore_token(self) -> None:
        """Undo :meth:`revoke_token`."""
        with self._lock:
            self._token_revoked = False

    @property
    def token_revoked(self) -> bool:
        with self._lock:
            return self._token_revoked

    def enforce_limits(
        self,
        *,
        per_bot_per_second: int = 30,
        per_chat_per_second: float = 1.0,
        chat_burst: int = 3,
        per_group_per_minute: int = 20,
        enabled: bool = True,
    ) -> None:
        """Enforce Telegram's flood limits on sending methods (send*/copyMessage/forwardMessage/edits;
        not sendChatAction), so tests can see how the bot copes with 429s it provokes itself.

        A call over a limit gets 429 "Too Many Requests: retry after N" with ``parameters.retry_after``
        = N, the whole seconds (>= 1) until it would be allowed, and is not performed. Limits:

        * per private chat (positive id): a token bucket of ``chat_burst`` messages refilled at
          ``per_chat_per_second``;
        * per group/supergroup/channel (negative id or @username): at most ``per_group_per_minute``
          in any 60 s;
        * per bot: at most ``per_bot_per_second`` in any 1 s.

        Only performed calls use up the limits (rejected or failed ones do not). Calling this again
        starts from full buckets; ``enabled=False`` switches the limits off (the default state).
        The 429s are counted in :attr:`flood_errors` and :meth:`flood_errors_for`.
        """
        if min(per_bot_per_second, chat_burst, per_group_per_minute) < 1 or per_chat_per_second <= 0:
            raise ValueError("limits must be positive")
        with self._lock:
            self._limits = (
                _Limits(per_bot_per_second, per_chat_per_second, chat_burst, per_group_per_minute) if enabled else None
            )
            self._reset_limit_windows()

    @property
    def flood_errors(self) -> int:
        """How many 429s :meth:`enforce_limits` produced (scripted ``fail``/``fail_next`` ones do not count)."""
        with self._lock:
            return sum(self._flood_errors.values())

    def flood_errors_for(self, chat_id: int | str) -> int:
        """How many 429s :meth:`enforce_limits` produced for calls addressed to ``chat_id``."""
        with self._lock:
            return self._flood_errors[_chat_key(chat_id)]

    def block_chat(self, chat_id: int, description: str | None = None, *, notify: bool = False) -> None:
        """Every request addressed to ``chat_id`` now gets 403 (the user blocked the bot / bot was kicked).

        ``notify=True`` also queues the ``my_chat_member`` update Telegram sends when that happens.
        """
        if description is None:
            description = (
                "Forbidden: bot was blocked by the user"
                if chat_id > 0
                else "Forbidden: bot was kicked from the group chat"
            )
        with self._lock:
            self._blocked[chat_id] = description
            if notify:
                chat = self._chat(chat_id)
                user = self._user(chat_id if chat_id > 0 else self.default_staff_user_id)
                self._enqueue(
                    {
                        "my_chat_member": {
                            "chat": chat,
                            "from": user,
                            "date": int(time.time()),
                            "old_chat_member": {"status": "member", "user": self.bot_user},
                            "new_chat_member": {"status": "kicked", "user": self.bot_user, "until_date": 0},
                        }
                    }
                )

    def unblock_chat(self, chat_id: int) -> None:
        with self._lock:
            self._blocked.pop(chat_id, None)

    def delay(self, method: str, seconds: float) -> None:
        """Stall every response to ``method`` by ``seconds`` (0 removes the delay)."""
        with self._lock:
            if seconds > 0:
                self._delays[method.lower()] = seconds
            else:
                self._delays.pop(method.lower(), None)

    # -- simulating users -----------------------------------------------------------------------

    def _user(
        self,
        user_id: int,
        first_name: str = "Anna",
        username: str | None = None,
        language_code: str | None = "en",
        last_name: str | None = None,
    ) -> JSONDict:
        user: JSONDict = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        if language_code:
            user["language_code"] = language_code
        return user

    @staticmethod
    def _infer_type(chat_id: int, chat_type: str | None) -> str:
        if chat_type and not (chat_type == "private" and chat_id < 0):
            return chat_type
        if chat_id > 0:
            return "private"
        return "supergroup" if str(chat_id).startswith("-100") else "group"

    def _chat(
        self, chat_id: int, chat_type: str | None = None, user: JSONDict | None = None, title: str | None = None
    ) -> JSONDict:
        """The Chat object for ``chat_id`` (registered on first use)."""
        known = self._chats.get(chat_id)
        if known is not None and (chat_type is None or known["type"] == self._infer_type(chat_id, chat_type)):
            return dict(known)
        kind = self._infer_type(chat_id, chat_type)
        chat: JSONDict = {"id": chat_id, "type": kind}
        if kind == "private":
            chat["first_name"] = (user or {}).get("first_name", "Anna")
            if user and user.get("username"):
                chat["username"] = user["username"]
        else:
            chat["title"] = title or ("Clinic staff" if kind != "channel" else "Clinic channel")
        self._chats[chat_id] = chat
        return dict(chat)

    def add_chat(
        self,
        chat_id: int,
        chat_type: str | None = None,
        *,
        title: str | None = None,
        first_name: str = "Anna",
        username: str | None = None,
        is_forum: bool = False,
    ) -> JSONDict:
        """Register a chat (needed before the bot may send to it when ``strict_chats=True``)."""
        with self._lock:
            self._chats.pop(chat_id, None)
            chat = self._chat(chat_id, chat_type, {"first_name": first_name, "username": username}, title)
            if is_forum:
                self._chats[chat_id]["is_forum"] = True
                chat["is_forum"] = True
            return chat

    def _next_message_id(self, chat_id: int) -> int:
        value = self._message_counters.get(chat_id, 0) + 1
        self._message_counters[chat_id] = value
        return value

    def _file(self, prefix: str) -> tuple[str, str]:
        n = next(self._file_ids)
        return f"{prefix}{n:06d}-fake-file-id", f"AQAD{n:06d}"

    def _enqueue(self, payload: JSONDict, *, enqueue: bool = True, sticky: bool = False) -> JSONDict:
        with self._cond:
            update = {"update_id": self._next_update_id, **payload}
            self._next_update_id += 1
            if enqueue:
                self._pending.append(_Pending(update, sticky=sticky))
                self._cond.notify_all()
            return copy.deepcopy(update)

    def _user_message(
        self,
        chat_id: int,
        fields: JSONDict,
        *,
        user_id: int | None = None,
        first_name: str = "Anna",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        chat_type: str | None = "private",
        chat_title: str | None = None,
        reply_to_message_id: int | None = None,
        message_thread_id: int | None = None,
        enqueue: bool = True,
    ) -> JSONDict:
        with self._lock:
            known = self._chats.get(chat_id)
            if known is not None and chat_type == "private":  # the default: keep what the chat already is
                kind = known["type"]
            else:
                kind = self._infer_type(chat_id, chat_type)
            if user_id is None:
                user_id = chat_id if kind == "private" else self.default_staff_user_id
            user = self._user(user_id, first_name, username, language_code, last_name)
            chat = self._chat(chat_id, kind, user, chat_title)
            message: JSONDict = {
                "message_id": self._next_message_id(chat_id),
                "from": user,
                "chat": chat,
                "date": int(time.time()),
            }
            if message_thread_id is not None:
                message["message_thread_id"] = message_thread_id
                message["is_topic_message"] = True
            if reply_to_message_id is not None:
                replied = self._messages.get((chat_id, reply_to_message_id))
                if replied is None:
                    raise ValueError(f"cannot reply to unknown message {reply_to_message_id} in chat {chat_id}")
                message["reply_to_message"] = {
                    k: v for k, v in copy.deepcopy(replied).items() if k != "reply_to_message"
                }
            message.update(fields)
            self._messages[(chat_id, message["message_id"])] = copy.deepcopy(message)
            return self._enqueue({"message": message}, enqueue=enqueue)

    def send_text(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        first_name: str = "Anna",
        username: str | None = None,
        language_code: str | None = "en",
        chat_type: str = "private",
        reply_to_message_id: int | None = None,
        message_thread_id: int | None = None,
        last_name: str | None = None,
        chat_title: str | None = None,
        entities: list[JSONDict] | None = None,
        enqueue: bool = True,
    ) -> JSONDict:
        """A user (or, in a group, a staff member) writes ``text``; returns the queued Update dict.

        A negative ``chat_id`` with the default chat_type becomes a group ("-100..." a supergroup)
        whose sender defaults to ``default_staff_user_id``. ``/commands`` get bot_command entities.
        ``reply_to_message_id`` embeds the replied-to message (e.g. one the bot sent) like Telegram.
        """
        fields: JSONDict = {"text": text}
        found = entities if entities is not None else _command_entities(text)
        if found:
            fields["entities"] = found
        return self._user_message(
            chat_id,
            fields,
            user_id=user_id,
            first_name=first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
            chat_type=chat_type,
            chat_title=chat_title,
            reply_to_message_id=reply_to_message_id,
            message_thread_id=message_thread_id,
            enqueue=enqueue,
        )

    def reply_to_bot(
        self,
        chat_id: int,
        text: str,
        *,
        reply_to_message_id: int | None = None,
        user_id: int | None = None,
        first_name: str = "Staff",
        username: str | None = "clinic_staff",
        language_code: str | None = "en",
        chat_type: str = "private",
        message_thread_id: int | None = None,
        enqueue: bool = True,
    ) -> JSONDict:
        """Reply to a bot message (default: the latest one in that chat), e.g. staff answering an alert."""
        if reply_to_message_id is None:
            with self._lock:
                own = [
                    m
                    for (cid, _), m in self._messages.items()
                    if cid == chat_id and m.get("from", {}).get("id") == self.bot_user["id"]
                ]
            if not own:
                raise ValueError(f"the bot has no message in chat {chat_id} to reply to")
            reply_to_message_id = max(m["message_id"] for m in own)
        return self.send_text(
            chat_id,
            text,
            user_id=user_id,
            first_name=first_name,
            username=username,
            language_code=language_code,
            chat_type=chat_type,
            reply_to_message_id=reply_to_message_id,
            message_thread_id=message_thread_id,
            enqueue=enqueue,
        )

    def send_sticker(self, chat_id: int, *, emoji: str = "👍", **kw: Any) -> JSONDict:
        file_id, unique = self._file("CAACAgIAAxkBAAI")
        sticker = {
            "file_id": file_id,
            "file_unique_id": unique,
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
            "set_name": "FakeStickers",
            "file_size": 24576,
        }
        return self._user_message(chat_id, {"sticker": sticker}, **kw)

    def send_photo(self, chat_id: int, *, caption: str | None = None, **kw: Any) -> JSONDict:
        file_id, unique = self._file("AgACAgIAAxkBAAI")
        sizes = [
            {
                "file_id": f"{file_id}-{w}",
                "file_unique_id": f"{unique}{i}",
                "width": w,
                "height": w * 3 // 4,
                "file_size": w * 40,
            }
            for i, w in enumerate((90, 320, 800, 1280))
        ]
        fields: JSONDict = {"photo": sizes}
        if caption is not None:
            fields["caption"] = caption
        return self._user_message(chat_id, fields, **kw)

    def send_voice(self, chat_id: int, *, duration: int = 3, **kw: Any) -> JSONDict:
        file_id, unique = self._file("AwACAgIAAxkBAAI")
        voice = {
            "file_id": file_id,
            "file_unique_id": unique,
            "duration": duration,
            "mime_type": "audio/ogg",
            "file_size": 4000 * duration,
        }
        return self._user_message(chat_id, {"voice": voice}, **kw)

    def send_document(
        self,
        chat_id: int,
        *,
        file_name: str = "report.pdf",
        mime_type: str = "application/pdf",
        caption: str | None = None,
        **kw: Any,
    ) -> JSONDict:
        file_id, unique = self._file("BQACAgIAAxkBAAI")
        fields: JSONDict = {
            "document": {
                "file_id": file_id,
                "file_unique_id": unique,
                "file_name": file_name,
                "mime_type": mime_type,
                "file_size": 12345,
            }
        }
        if caption is not None:
            fields["caption"] = caption
        return self._user_message(chat_id, fields, **kw)

    def send_location(self, chat_id: int, latitude: float = 52.52, longitude: float = 13.405, **kw: Any) -> JSONDict:
        return self._user_message(chat_id, {"location": {"latitude": latitude, "longitude": longitude}}, **kw)

    def send_user_message(self, chat_id: int, fields: JSONDict, **kw: Any) -> JSONDict:
        """Any other kind of user message: ``fields`` are merged into the Message object."""
        return self._user_message(chat_id, fields, **kw)

    def edit_text(self, chat_id: int, message_id: int, text: str, *, enqueue: bool = True) -> JSONDict:
        """The user edits one of their text messages (an ``edited_message`` update)."""
        with self._lock:
            stored = self._messages.get((chat_id, message_id))
            if stored is None or stored.get("from", {}).get("is_bot"):
                raise ValueError(f"no user message {message_id} in chat {chat_id} to edit")
            stored["text"] = text
            stored["edit_date"] = int(time.time())
            entities = _command_entities(text)
            if entities:
                stored["entities"] = entities
            else:
                stored.pop("entities", None)
            return self._enqueue({"edited_message": copy.deepcopy(stored)}, enqueue=enqueue)

    def press_button(
        self,
        chat_id: int,
        message_id: int,
        data: str,
        *,
        user_id: int | None = None,
        first_name: str = "Anna",
        username: str | None = None,
        language_code: str | None = "en",
        strict: bool = True,
        enqueue: bool = True,
    ) -> JSONDict:
        """A user presses an inline button with ``data`` under message ``message_id`` (a callback_query).

        With ``strict`` the message must exist and carry a button with that callback_data.
        """
        with self._lock:
            message = copy.deepcopy(self._messages.get((chat_id, message_id)))
            if strict:
                if message is None:
                    raise ValueError(f"no message {message_id} in chat {chat_id}")
                present = [b.get("callback_data") for b in self._inline_buttons(message.get("reply_markup"))]
                if data not in present:
                    raise ValueError(f"message {message_id} in chat {chat_id} has no button {data!r}: {present}")
            if message is None:
                message = {"message_id": message_id, "chat": self._chat(chat_id), "date": 0}
            if user_id is None:
                user_id = chat_id if chat_id > 0 else self.default_staff_user_id
            query_id = str(next(self._callback_ids))
            self._callback_queries[query_id] = False
            query = {
                "id": query_id,
                "from": self._user(user_id, first_name, username, language_code),
                "message": message,
                "chat_instance": str(-abs(hash((chat_id, self.token))) % 10**18),
                "data": data,
            }
            return self._enqueue({"callback_query": query}, enqueue=enqueue)

    def click(self, chat_id: int, button_text: str, **kw: Any) -> JSONDict:
        """Press the callback button labelled ``button_text`` on the newest bot message that has one."""
        with self._lock:
            candidates = sorted(
                (m for (cid, _), m in self._messages.items() if cid == chat_id and m.get("reply_markup")),
                key=lambda m: m["message_id"],
                reverse=True,
            )
            for message in candidates:
                for button in self._inline_buttons(message["reply_markup"]):
                    if button.get("text") == button_text and "callback_data" in button:
                        return self.press_button(chat_id, message["message_id"], button["callback_data"], **kw)
        raise ValueError(f"no inline button labelled {button_text!r} in chat {chat_id}")

    @staticmethod
    def buttons(message_or_markup: JSONDict | None) -> list[tuple[str, str | None]]:
        """(text, callback_data or url) of every inline button of a message/delivery/markup dict."""
        if not message_or_markup:
            return []
        markup = message_or_markup.get("reply_markup", message_or_markup)
        return [(b.get("text", ""), b.get("callback_data", b.get("url"))) for b in FakeTelegram._inline_buttons(markup)]

    def migrate_chat(
        self, old_chat_id: int, new_chat_id: int | None = None, *, user_id: int | None = None, enqueue: bool = True
    ) -> tuple[JSONDict, JSONDict]:
        """A group is upgraded to a supergroup: queues the ``migrate_to_chat_id`` service message in the
        old chat and the ``migrate_from_chat_id`` one in the new chat; from now on requests to the old
        chat fail with 400 + ``parameters.migrate_to_chat_id`` (PTB raises ChatMigrated)."""
        if new_chat_id is None:
            new_chat_id = int(f"-100{abs(old_chat_id)}")
        with self._lock:
            sender = self._user(user_id or self.default_staff_user_id, "Staff", None, "en")
            old_chat = self._chat(old_chat_id, "group")
            new_chat = self._chat(new_chat_id, "supergroup", title=old_chat.get("title"))
            first = {
                "message_id": self._next_message_id(old_chat_id),
                "from": sender,
                "chat": old_chat,
                "date": int(time.time()),
                "migrate_to_chat_id": new_chat_id,
            }
            second = {
                "message_id": self._next_message_id(new_chat_id),
                "from": sender,
                "chat": new_chat,
                "date": int(time.time()),
                "migrate_from_chat_id": old_chat_id,
            }
            self._migrated[old_chat_id] = new_chat_id
            return self._enqueue({"message": first}, enqueue=enqueue), self._enqueue(
                {"message": second}, enqueue=enqueue
            )

    def send_raw(self, update: JSONDict) -> JSONDict:
        """Queue an arbitrary update (``update_id`` is assigned when missing)."""
        with self._cond:
            update = copy.deepcopy(update)
            if "update_id" not in update:
                update["update_id"] = self._next_update_id
            self._next_update_id = max(self._next_update_id, int(update["update_id"]) + 1)
            self._pending.append(_Pending(update, sticky=True))
            self._cond.notify_all()
            return copy.deepcopy(update)

    def push_twice(self, update: JSONDict) -> JSONDict:
        """Make sure ``update`` (same update_id) is delivered twice, like a retried webhook delivery.

        If it is still pending once (e.g. just returned by ``send_text``), one more copy is queued;
        otherwise two. With getUpdates both copies typically arrive in the same batch; with a webhook
        they are POSTed one after the other.
        """
        with self._cond:
            already = sum(1 for p in self._pending if p.update_id == update["update_id"])
            for _ in range(max(0, 2 - already)):
                self._pending.append(_Pending(copy.deepcopy(update), sticky=True))
            self._cond.notify_all()
            return copy.deepcopy(update)

    @property
    def pending_updates(self) -> list[JSONDict]:
        with self._lock:
            return [copy.deepcopy(p.update) for p in self._pending]

    # -- webhook ----------------------------------------------------------------------------------

    @staticmethod
    def post_webhook(
        url: str, update: JSONDict, secret_token: str | None = None, timeout: float = 10.0
    ) -> tuple[int, str]:
        """POST ``update`` to a bot's webhook like Telegram does; returns (HTTP status, body text)."""
        headers = {"Content-Type": "application/json"}
        if secret_token is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret_token
        request = urllib.request.Request(url, data=json.dumps(update).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")

    @classmethod
    async def apost_webhook(
        cls, url: str, update: JSONDict, secret_token: str | None = None, timeout: float = 10.0
    ) -> tuple[int, str]:
        """:meth:`post_webhook` off the event loop (use this when the webhook server runs in the same loop)."""
        return await asyncio.to_thread(cls.post_webhook, url, update, secret_token, timeout)

    @property
    def webhook_url(self) -> str:
        with self._lock:
            return str(self._webhook.get("url", ""))

    def _webhook_loop(self) -> None:
        while not self._stopping.is_set():
            with self._cond:
                entry = self._next_webhook_entry()
                if entry is None:
                    self._cond.wait(0.2)
                    continue
                url, secret = self._webhook["url"], self._webhook.get("secret_token")
            try:
                status, body = self.post_webhook(url, entry.update, secret, timeout=10.0)
            except (OSError, ValueError) as exc:  # connection refused, timeout, ...
                status, body = 0, f"{type(exc).__name__}: {exc}"
            with self._cond:
                self.webhook_attempts.append(
                    {"update_id": entry.update_id, "status": status, "body": body, "time": time.time()}
                )
                if 200 <= status < 300:
                    if entry in self._pending:
                        self._pending.remove(entry)
                    self._cond.notify_all()
                    continue
                self._webhook["last_error_date"] = int(time.time())
                self._webhook["last_error_message"] = (
                    f"Wrong response from the webhook: {status}" if status else f"Connection failed: {body}"
                )
            self._stopping.wait(self.webhook_retry_delay)

    def _next_webhook_entry(self) -> _Pending | None:
        if not (self.auto_deliver_webhook and self._webhook.get("url")):
            return None
        self._drop_disallowed()
        return self._pending[0] if self._pending else None

    # -- request dispatch -------------------------------------------------------------------------

    def _dispatch(self, verb: str, path: str, query: str, content_type: str, body: bytes) -> tuple[int, JSONDict]:
        """Answer one request without sockets: ``(HTTP status, JSON payload)``.

        For in-process request layers. Where the HTTP server would close the connection (``drop()``)
        this raises :class:`ConnectionDropped`; an HTML answer (``fail(html=True)``) comes back as
        its JSON equivalent.
        """
        reply = self._answer(verb, path, query, content_type, body)
        if reply.drop:
            raise ConnectionDropped("the fake Telegram server closed the connection without a response")
        return reply.status, reply.payload

    def _answer(self, verb: str, path: str, query: str, content_type: str, body: bytes) -> _Reply:
        arrived = time.time()
        match = re.fullmatch(r"/bot([^/]*)/([A-Za-z0-9_]*)/?", path)
        if match is None:
            return _Reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        token, method = match.groups()
        if token != self.token:
            return _Reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        name = method.lower()
        handler = getattr(self, f"_m_{name}", None)
        canonical = handler.__doc__.strip() if handler is not None and handler.__doc__ else method
        params: JSONDict = {}
        files: dict[str, UploadedFile] = {}
        html_page: str | None = None
        dropped = False
        try:
            try:
                params, files = _parse_request(query, content_type, body)
            except _ApiError:
                if not self.token_revoked:
                    raise
            with self._lock:
                if self._token_revoked:
                    raise _ApiError(401, "Unauthorized")
                chat = _chat_key(params.get("chat_id"))
                stall = self._take_fault(("stall",), name, chat)
                outcome = self._take_fault(("fail", "drop"), name, chat)
                wait = self._delays.get(name, 0.0)
            if stall is not None and not stall.after_processing:
                wait += stall.seconds
            if wait:
                self._stopping.wait(wait)
            if outcome is not None and outcome.kind == "fail":
                if outcome.html:
                    html_page = _nginx_page(outcome.status)
                raise _ApiError(outcome.status, outcome.description, copy.deepcopy(outcome.parameters))
            lose_answer = outcome is not None and outcome.kind == "drop" and outcome.after_processing
            if outcome is not None and not lose_answer:
                raise _Dropped
            if handler is None:
                raise _ApiError(404, "Not Found: method not found")
            if name == "getupdates":
                result = self._get_updates(params)  # blocks without holding the lock
            else:
                with self._lock:
                    limited = self._limits is not None and name in _LIMITED_METHODS
                    if limited:
                        self._check_flood(params)
                    delivered = len(self._deliveries)
                    result = handler(params, files)
                    if limited:
                        self._count_sent(params)
                    if lose_answer:
                        for entry in self._deliveries[delivered:]:
                            entry["response_lost"] = True
            status, payload = 200, {"ok": True, "result": result}
            dropped = lose_answer
            if stall is not None and stall.after_processing:
                self._stopping.wait(stall.seconds)
        except _ApiError as exc:
            status, payload = exc.status, exc.payload()
        except _Dropped:
            status, payload, dropped = 0, {}, True
        with self._cond:
            self._calls.append(
                Call(
                    method=canonical,
                    params=params,
                    time=arrived,
                    http_method=verb,
                    status=status,
                    response=copy.deepcopy(payload),
                    files=files,
                    seq=next(self._call_seq),
                    dropped=dropped,
                )
            )
            self._cond.notify_all()
        return _Reply(status, payload, html=html_page, drop=dropped)

    def _take_fault(self, kinds: tuple[FaultKind, ...], method: str, chat_id: int | str | None) -> _Fault | None:
        """Use up one firing of the first scripted fault of these kinds that matches the call."""
        for index, fault in enumerate(self._faults):
            if fault.kind in kinds and fault.matches(method, chat_id):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        del self._faults[index]
                return copy.copy(fault)
        return None

    # -- flood limits -----------------------------------------------------------------------------

    def _reset_limit_windows(self) -> None:
        self._bot_sends: deque[float] = deque()  # monotonic times of performed sends, last second
        self._chat_buckets: dict[int | str, tuple[float, float]] = {}  # private chat -> (tokens, at)
        self._group_sends: dict[int | str, deque[float]] = {}  # group -> times of sends, last minute

    def _limit_chat(self, params: JSONDict) -> int | str | None:
        key = _chat_key(params.get("chat_id"))
        if isinstance(key, str) and key.startswith("@"):
            for chat in self._chats.values():
                if chat.get("username") == key[1:]:
                    return int(chat["id"])
        return key

    def _check_flood(self, params: JSONDict) -> None:
        """Raise Telegram's 429 if performing this send now would break a limit (caller holds the lock)."""
        limits = self._limits
        assert limits is not None
        now = time.monotonic()
        chat = self._limit_chat(params)
        waits: list[float] = []
        while self._bot_sends and self._bot_sends[0] <= now - 1.0:
            self._bot_sends.popleft()
        if len(self._bot_sends) >= limits.per_bot_per_second:
            waits.append(self._bot_sends[0] + 1.0 - now)
        if isinstance(chat, int) and chat > 0:
            tokens = self._bucket(chat, now)
            if tokens < 1.0:
                waits.append((1.0 - tokens) / limits.per_chat_per_second)
        elif chat is not None:
            sent = self._group_sends.setdefault(chat, deque())
            while sent and sent[0] <= now - 60.0:
                sent.popleft()
            if len(sent) >= limits.per_group_per_minute:
                waits.append(sent[0] + 60.0 - now)
        if waits:
            self._flood_errors[chat] += 1
            retry_after = max(1, math.ceil(max(waits)))
            raise _ApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})

    def _bucket(self, chat: int, now: float) -> float:
        limits = self._limits
        assert limits is not None
        tokens, at = self._chat_buckets.get(chat, (float(limits.chat_burst), now))
        tokens = min(float(limits.chat_burst), tokens + (now - at) * limits.per_chat_per_second)
        self._chat_buckets[chat] = (tokens, now)
        return tokens

    def _count_sent(self, params: JSONDict) -> None:
        """A limited send was performed: use up its share of the limits (caller holds the lock)."""
        now = time.monotonic()
        chat = self._limit_chat(params)
        self._bot_sends.append(now)
        if isinstance(chat, int) and chat > 0:
            tokens = self._bucket(chat, now)
            self._chat_buckets[chat] = (tokens - 1.0, now)
        elif chat is not None:
            self._group_sends.setdefault(chat, deque()).append(now)

    # -- helpers for handlers ---------------------------------------------------------------------

    @staticmethod
    def _require(params: JSONDict, name: str) -> Any:
        value = params.get(name)
        if value is None or value == "":
            raise _bad_request(f"{name} is empty" if name != "text" else "message text is empty")
        return value

    def _resolve_chat(self, params: JSONDict, name: str = "chat_id", *, check_blocked: bool = True) -> JSONDict:
        raw = self._require(params, name)
        if isinstance(raw, str):
            for chat in self._chats.values():
                if raw.startswith("@") and chat.get("username") == raw[1:]:
                    raw = chat["id"]
                    break
            else:
                raise _bad_request("chat not found")
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise _bad_request("chat not found")
        if raw in self._blocked and name == "chat_id" and check_blocked:
            raise _ApiError(403, self._blocked[raw])
        if raw in self._migrated:
            raise _ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": self._migrated[raw]},
            )
        if raw not in self._chats and self.strict_chats:
            raise _bad_request("chat not found")
        return self._chat(raw)

    @staticmethod
    def _inline_buttons(markup: Any) -> Iterable[JSONDict]:
        if isinstance(markup, dict) and isinstance(markup.get("inline_keyboard"), list):
            for row in markup["inline_keyboard"]:
                if isinstance(row, list):
                    yield from (b for b in row if isinstance(b, dict))

    def _check_markup(self, markup: Any) -> JSONDict | None:
        """Validate reply_markup; return it if it is an inline keyboard (the only kind echoed in Messages)."""
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise _bad_request("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in markup:
            rows = markup["inline_keyboard"]
            if not isinstance(rows, list) or any(not isinstance(row, list) for row in rows):
                raise _bad_request('field "inline_keyboard" of the InlineKeyboardMarkup should be an Array of Arrays')
            for button in self._inline_buttons(markup):
                actions = [key for key in _INLINE_BUTTON_ACTIONS if key in button]
                if not actions:
                    raise _bad_request(
                        "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
                    )
                if not isinstance(button.get("text"), str) or not button["text"]:
                    raise _bad_request('can\'t parse inline keyboard button: Field "text" must be of type String')
                if "callback_data" in button:
                    data = button["callback_data"]
                    if not isinstance(data, str) or not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA_BYTES:
                        raise _bad_request("BUTTON_DATA_INVALID")
                if "url" in button and not re.match(r"(https?|tg)://\S+$", str(button["url"])):
                    raise _bad_request("BUTTON_URL_INVALID")
            return markup if any(rows) else None
        if "keyboard" in markup:
            rows = markup["keyboard"]
            if not isinstance(rows, list) or any(not isinstance(row, list) for row in rows):
                raise _bad_request('field "keyboard" of the ReplyKeyboardMarkup should be an Array of Arrays')
            return None
        if markup.get("remove_keyboard") or markup.get("force_reply"):
            return None
        raise _bad_request("can't parse reply keyboard markup JSON object")

    def _check_text(self, params: JSONDict, key: str = "text") -> tuple[str, list[JSONDict]]:
        raw = params.get(key)
        if raw is None or raw == "":
            raise _bad_request("message text is empty")
        plain, entities = _format_text(str(raw), params.get("parse_mode"), params.get("entities"))
        if not plain:
            raise _bad_request("message text is empty")
        if len(plain) > MAX_TEXT_LENGTH:
            raise _bad_request("message is too long")
        return plain, entities

    def _check_caption(self, params: JSONDict) -> tuple[str | None, list[JSONDict]]:
        raw = params.get("caption")
        if raw is None or raw == "":
            return None, []
        plain, entities = _format_text(str(raw), params.get("parse_mode"), params.get("caption_entities"))
        if len(plain) > MAX_CAPTION_LENGTH:
            raise _bad_request("message caption is too long")
        return plain or None, entities

    def _reply_to(self, chat_id: int, params: JSONDict) -> JSONDict | None:
        reply = params.get("reply_parameters")
        if not isinstance(reply, dict):
            reply = {"message_id": params["reply_to_message_id"]} if params.get("reply_to_message_id") else None
            if reply is not None and params.get("allow_sending_without_reply"):
                reply["allow_sending_without_reply"] = True
        if not reply:
            return None
        target_chat = reply.get("chat_id", chat_id)
        found = self._messages.get((target_chat, reply.get("message_id")))  # type: ignore[arg-type]
        if found is None:
            if reply.get("allow_sending_without_reply"):
                return None
            raise _bad_request("message to be replied not found")
        return {k: v for k, v in copy.deepcopy(found).items() if k != "reply_to_message"}

    def _new_bot_message(self, chat: JSONDict, params: JSONDict, fields: JSONDict, markup: JSONDict | None) -> JSONDict:
        message: JSONDict = {
            "message_id": self._next_message_id(chat["id"]),
            "from": dict(self.bot_user),
            "chat": chat,
            "date": int(time.time()),
        }
        if params.get("message_thread_id") is not None and chat["type"] == "supergroup":
            message["message_thread_id"] = params["message_thread_id"]
            message["is_topic_message"] = True
        replied = self._reply_to(chat["id"], params)
        if replied is not None:
            message["reply_to_message"] = replied
        message.update(fields)
        if markup is not None:
            message["reply_markup"] = markup
        self._messages[(chat["id"], message["message_id"])] = copy.deepcopy(message)
        return message

    def _deliver(self, method: str, chat_id: int, message: JSONDict, params: JSONDict, text: str | None) -> None:
        self._deliveries.append(
            {
                "method": method,
                "chat_id": chat_id,
                "message_id": message["message_id"],
                "text": text,
                "raw_text": params.get("text", params.get("caption")),
                "parse_mode": params.get("parse_mode"),
                "reply_markup": copy.deepcopy(params.get("reply_markup")),
                "message": copy.deepcopy(message),
                "time": time.time(),
                "response_lost": False,
            }
        )

    def _bot_message_for_edit(self, params: JSONDict) -> tuple[JSONDict, JSONDict]:
        if params.get("inline_message_id"):
            raise _bad_request("inline messages are not supported by the fake")
        chat = self._resolve_chat(params)
        message_id = self._require(params, "message_id")
        stored = self._messages.get((chat["id"], message_id))
        if stored is None:
            raise _bad_request("message to edit not found")
        if stored.get("from", {}).get("id") != self.bot_user["id"]:
            raise _bad_request("message can't be edited")
        return chat, stored

    @staticmethod
    def _scope_key(scope: Any) -> str:
        return json.dumps(scope or {"type": "default"}, sort_keys=True)

    # -- updates ----------------------------------------------------------------------------------

    def _allowed(self, update: JSONDict) -> bool:
        kind = next((k for k in update if k != "update_id"), "")
        if self._allowed_updates:
            return kind in self._allowed_updates
        return kind not in _OPT_IN_UPDATES

    def _drop_disallowed(self) -> None:
        self._pending = [p for p in self._pending if self._allowed(p.update)]

    def _confirm(self, offset: int) -> None:
        if offset > 0:
            self._pending = [p for p in self._pending if p.update_id >= offset or (p.sticky and not p.handed_out)]
        elif offset < 0:
            self._pending = self._pending[offset:]

    def _get_updates(self, params: JSONDict) -> list[JSONDict]:
        offset = int(params.get("offset") or 0)
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        timeout = max(float(params.get("timeout") or 0), 0.0)
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._webhook.get("url"):
                raise _ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
                    "the webhook first",
                )
            if "allowed_updates" in params and isinstance(params["allowed_updates"], list):
                self._allowed_updates = list(params["allowed_updates"]) or None
            self._poll_generation += 1
            generation = self._poll_generation
            self._cond.notify_all()  # wake an older long poll so that it can be terminated
            self._confirm(offset)
            while True:
                if self._token_revoked:
                    raise _ApiError(401, "Unauthorized")
                if generation != self._poll_generation:
                    raise _ApiError(
                        409,
                        "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
                        "is running",
                    )
                self._drop_disallowed()
                batch = self._pending[:limit]
                remaining = deadline - time.monotonic()
                if batch or remaining <= 0 or self._stopping.is_set():
                    for entry in batch:
                        entry.handed_out = True
                    return [copy.deepcopy(entry.update) for entry in batch]
                self._parked_polls += 1
                self._cond.notify_all()
                try:
                    self._cond.wait(remaining)
                finally:
                    self._parked_polls -= 1

    # -- Bot API methods (the docstring is the canonical method name) -------------------------------

    def _m_getupdates(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """getUpdates"""  # handled in _dispatch (long polling must not hold the lock)

    def _m_getme(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """getMe"""
        return dict(self.bot_user)

    def _m_logout(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """logOut"""
        return True

    def _m_close(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """close"""
        return True

    def _m_setwebhook(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """setWebhook"""
        url = params.get("url") or ""
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _bad_request("secret token contains unallowed characters")
        if url and not re.match(r"https?://[^/\s]+", str(url)):
            raise _bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        if params.get("drop_pending_updates"):
            self._pending.clear()
        if isinstance(params.get("allowed_updates"), list):
            self._allowed_updates = list(params["allowed_updates"]) or None
        if url:
            self._webhook = {
                "url": str(url),
                "secret_token": None if secret is None else str(secret),
                "max_connections": int(params.get("max_connections") or 40),
                "ip_address": "127.0.0.1",
            }
        else:
            self._webhook = {}
        self._cond.notify_all()
        return True

    def _m_deletewebhook(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """deleteWebhook"""
        if params.get("drop_pending_updates"):
            self._pending.clear()
        self._webhook = {}
        return True

    def _m_getwebhookinfo(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """getWebhookInfo"""
        info: JSONDict = {
            "url": self._webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }
        if self._webhook.get("url"):
            for key in ("max_connections", "ip_address", "last_error_date", "last_error_message"):
                if key in self._webhook:
                    info[key] = self._webhook[key]
            if self._allowed_updates:
                info["allowed_updates"] = list(self._allowed_updates)
        return info

    def _m_setmycommands(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """setMyCommands"""
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad_request("can't parse commands JSON object")
        for command in commands:
            if not isinstance(command, dict) or not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command"))):
                raise _bad_request("BOT_COMMAND_INVALID")
            description = command.get("description")
            if not isinstance(description, str) or not 1 <= len(description) <= 256:
                raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        language = params.get("language_code") or ""
        if language and not re.fullmatch(r"[a-z]{2}", str(language)):
            raise _bad_request("LANG_CODE_INVALID")
        key = (self._scope_key(params.get("scope")), str(language))
        if commands:
            self._commands[key] = [{"command": c["command"], "description": c["description"]} for c in commands]
        else:
            self._commands.pop(key, None)
        return True

    def _m_getmycommands(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """getMyCommands"""
        key = (self._scope_key(params.get("scope")), str(params.get("language_code") or ""))
        return copy.deepcopy(self._commands.get(key, []))

    def _m_deletemycommands(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """deleteMyCommands"""
        self._commands.pop((self._scope_key(params.get("scope")), str(params.get("language_code") or "")), None)
        return True

    def _m_setchatmenubutton(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """setChatMenuButton"""
        chat_id = params.get("chat_id")
        button = params.get("menu_button") or {"type": "default"}
        if not isinstance(button, dict) or button.get("type") not in ("default", "commands", "web_app"):
            raise _bad_request("can't parse menu button JSON object")
        self._menu_buttons[chat_id if isinstance(chat_id, int) else None] = button
        return True

    def _m_getchatmenubutton(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """getChatMenuButton"""
        chat_id = params.get("chat_id")
        key = chat_id if isinstance(chat_id, int) else None
        return copy.deepcopy(self._menu_buttons.get(key) or self._menu_buttons.get(None) or {"type": "commands"})

    def _m_getchat(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """getChat"""
        chat = self._resolve_chat(params, check_blocked=False)
        return {
            **chat,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }

    def _m_sendchataction(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """sendChatAction"""
        self._resolve_chat(params)
        if params.get("action") not in _CHAT_ACTIONS:
            raise _bad_request("wrong parameter action in request")
        return True

    def _m_sendmessage(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """sendMessage"""
        chat = self._resolve_chat(params)
        text, entities = self._check_text(params)
        markup = self._check_markup(params.get("reply_markup"))
        fields: JSONDict = {"text": text}
        if entities:
            fields["entities"] = entities
        if isinstance(params.get("link_preview_options"), dict):
            fields["link_preview_options"] = params["link_preview_options"]
        message = self._new_bot_message(chat, params, fields, markup)
        self._deliver("sendMessage", chat["id"], message, params, text)
        return message

    def _send_media(self, method: str, kind: str, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        chat = self._resolve_chat(params)
        value = params.get(kind)
        if value is None and kind not in files:
            raise _bad_request(f"there is no {kind} in the request")
        if isinstance(value, str) and value.startswith("attach://") and value[9:] not in files:
            raise _bad_request(f"file {value!r} not found in the request")
        caption, caption_entities = self._check_caption(params)
        markup = self._check_markup(params.get("reply_markup"))
        file_id, unique = self._file("FAKE" + kind.upper())
        media: Any = {"file_id": file_id, "file_unique_id": unique, "file_size": 1024}
        if kind == "photo":
            media = [{**media, "width": 800, "height": 600}]
        elif kind == "document":
            uploaded = files.get(kind)
            media["file_name"] = uploaded.filename if uploaded else "document"
        elif kind == "sticker":
            media.update(type="regular", width=512, height=512, is_animated=False, is_video=False)
        elif kind in ("voice", "audio", "video", "animation"):
            media["duration"] = 1
            if kind in ("video", "animation"):
                media.update(width=640, height=480)
        fields: JSONDict = {kind: media}
        if caption:
            fields["caption"] = caption
            if caption_entities:
                fields["caption_entities"] = caption_entities
        message = self._new_bot_message(chat, params, fields, markup)
        self._deliver(method, chat["id"], message, params, caption)
        return message

    def _m_sendphoto(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """sendPhoto"""
        return self._send_media("sendPhoto", "photo", params, files)

    def _m_senddocument(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """sendDocument"""
        return self._send_media("sendDocument", "document", params, files)

    def _m_sendsticker(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """sendSticker"""
        return self._send_media("sendSticker", "sticker", params, files)

    def _m_sendvoice(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """sendVoice"""
        return self._send_media("sendVoice", "voice", params, files)

    def _m_sendaudio(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """sendAudio"""
        return self._send_media("sendAudio", "audio", params, files)

    def _m_sendvideo(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """sendVideo"""
        return self._send_media("sendVideo", "video", params, files)

    def _m_sendanimation(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """sendAnimation"""
        return self._send_media("sendAnimation", "animation", params, files)

    def _m_sendlocation(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """sendLocation"""
        chat = self._resolve_chat(params)
        latitude, longitude = self._require(params, "latitude"), self._require(params, "longitude")
        markup = self._check_markup(params.get("reply_markup"))
        fields = {"location": {"latitude": float(latitude), "longitude": float(longitude)}}
        message = self._new_bot_message(chat, params, fields, markup)
        self._deliver("sendLocation", chat["id"], message, params, None)
        return message

    def _m_editmessagetext(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """editMessageText"""
        chat, stored = self._bot_message_for_edit(params)
        if "text" not in stored:
            raise _bad_request("there is no text in the message to edit")
        text, entities = self._check_text(params)
        markup = self._check_markup(params.get("reply_markup"))
        if (
            text == stored.get("text")
            and entities == stored.get("entities", [])
            and markup == stored.get("reply_markup")
        ):
            raise _bad_request(_NOT_MODIFIED.removeprefix("Bad Request: "))
        stored["text"] = text
        stored["edit_date"] = int(time.time())
        if entities:
            stored["entities"] = entities
        else:
            stored.pop("entities", None)
        if markup is None:
            stored.pop("reply_markup", None)
        else:
            stored["reply_markup"] = markup
        message = copy.deepcopy(stored)
        self._deliver("editMessageText", chat["id"], message, params, text)
        return message

    def _m_editmessagereplymarkup(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """editMessageReplyMarkup"""
        chat, stored = self._bot_message_for_edit(params)
        markup = self._check_markup(params.get("reply_markup"))
        if markup == stored.get("reply_markup"):
            raise _bad_request(_NOT_MODIFIED.removeprefix("Bad Request: "))
        stored["edit_date"] = int(time.time())
        if markup is None:
            stored.pop("reply_markup", None)
        else:
            stored["reply_markup"] = markup
        message = copy.deepcopy(stored)
        self._deliver(
            "editMessageReplyMarkup",
            chat["id"],
            message,
            {"reply_markup": params.get("reply_markup")},
            stored.get("text", stored.get("caption")),
        )
        return message

    def _m_deletemessage(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """deleteMessage"""
        chat = self._resolve_chat(params)
        message_id = self._require(params, "message_id")
        if self._messages.pop((chat["id"], message_id), None) is None:
            raise _bad_request("message to delete not found")
        return True

    def _m_answercallbackquery(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """answerCallbackQuery"""
        query_id = str(self._require(params, "callback_query_id"))
        if self._callback_queries.get(query_id, True):  # unknown or already answered
            raise _bad_request("query is too old and response timeout expired or query ID is invalid")
        if len(str(params.get("text") or "")) > MAX_CALLBACK_ANSWER_LENGTH:
            raise _bad_request("MESSAGE_TOO_LONG")
        self._callback_queries[query_id] = True
        return True

    def _source_message(self, params: JSONDict, what: str) -> JSONDict:
        from_chat = self._resolve_chat(params, "from_chat_id")
        message_id = self._require(params, "message_id")
        source = self._messages.get((from_chat["id"], message_id))
        if source is None:
            raise _bad_request(f"message to {what} not found")
        return source

    def _m_forwardmessage(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """forwardMessage"""
        source = self._source_message(params, "forward")
        chat = self._resolve_chat(params)
        content = {k: copy.deepcopy(v) for k, v in source.items() if k not in _ENVELOPE_KEYS}
        sender = source.get("from")
        content["forward_origin"] = (
            {"type": "user", "sender_user": sender, "date": source["date"]}
            if sender
            else {"type": "hidden_user", "sender_user_name": "Hidden", "date": source["date"]}
        )
        content.pop("reply_markup", None)
        message = self._new_bot_message(chat, params, content, None)
        self._deliver("forwardMessage", chat["id"], message, params, source.get("text", source.get("caption")))
        return message

    def _m_copymessage(self, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        """copyMessage"""
        source = self._source_message(params, "copy")
        chat = self._resolve_chat(params)
        markup = self._check_markup(params.get("reply_markup"))
        content = {k: copy.deepcopy(v) for k, v in source.items() if k not in _ENVELOPE_KEYS}
        if any(k in content for k in ("migrate_to_chat_id", "migrate_from_chat_id", "new_chat_members")):
            raise _bad_request("message can't be copied")
        if "caption" in params:
            caption, caption_entities = self._check_caption(params)
            content.pop("caption_entities", None)
            if caption:
                content["caption"] = caption
                if caption_entities:
                    content["caption_entities"] = caption_entities
            else:
                content.pop("caption", None)
        message = self._new_bot_message(chat, params, content, markup)
        self._deliver("copyMessage", chat["id"], message, params, content.get("text", content.get("caption")))
        return {"message_id": message["message_id"]}
