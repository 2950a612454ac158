"""The fake Bot API server speaks what a real PTB 22 Bot expects, over real HTTP."""

from __future__ import annotations

import asyncio
import datetime as dtm
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeAllGroupChats,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from tests.fake_telegram import ConnectionDropped, FakeTelegram


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(fake.token, base_url=fake.base_url) as client:
        yield client


def keyboard(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(text, callback_data=data)] for text, data in pairs])


async def test_get_me_describes_the_bot(bot: Bot, fake: FakeTelegram) -> None:
    me = await bot.get_me()
    assert me.is_bot and me.username == "aftercare_test_bot" and me.id == 123456
    assert fake.calls_to("getMe")[0].http_method == "POST"


async def test_wrong_token_is_unauthorized(fake: FakeTelegram) -> None:
    with pytest.raises(InvalidToken):
        await Bot("999:WRONG", base_url=fake.base_url).get_me()


async def test_unknown_method_is_not_found(bot: Bot) -> None:
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("frobnicate")


async def test_send_message_round_trips_the_inline_keyboard(bot: Bot, fake: FakeTelegram) -> None:
    markup = keyboard(("Yes", "yes"), ("No", "no"))
    first = await bot.send_message(42, "Did it help?", reply_markup=markup)
    second = await bot.send_message(42, "Second")

    assert first.text == "Did it help?" and first.chat.id == 42 and first.from_user.is_bot
    assert first.reply_markup == markup
    assert second.message_id == first.message_id + 1 and second.reply_markup is None
    call = await fake.wait_for("sendMessage")
    assert call.params["chat_id"] == 42
    assert call.params["reply_markup"]["inline_keyboard"][0][0] == {"text": "Yes", "callback_data": "yes"}
    delivered = fake.messages_to(42)
    assert [m["text"] for m in delivered] == ["Did it help?", "Second"]
    assert fake.buttons(delivered[0]) == [("Yes", "yes"), ("No", "no")]


async def test_long_polling_returns_a_queued_user_message(bot: Bot, fake: FakeTelegram) -> None:
    threading.Timer(0.2, fake.send_text, args=(42, "/start hello"), kwargs={"language_code": "pl"}).start()
    started = time.monotonic()
    updates = await bot.get_updates(timeout=3)
    assert 0.1 < time.monotonic() - started < 2

    [update] = updates
    assert isinstance(update, Update)
    assert update.message.text == "/start hello"
    assert update.message.from_user.language_code == "pl"
    assert update.message.chat.type == "private" and update.effective_user.id == 42
    assert update.message.entities[0].type == "bot_command" and update.message.entities[0].length == 6

    # Not confirmed yet: delivered again; confirmed by offset: gone.
    assert [u.update_id for u in await bot.get_updates()] == [update.update_id]
    assert await bot.get_updates(offset=update.update_id + 1) == ()


async def test_long_polling_times_out_empty(bot: Bot) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == ()
    assert time.monotonic() - started >= 0.9


async def test_callback_query_press(bot: Bot, fake: FakeTelegram) -> None:
    sent = await bot.send_message(7, "Rate us", reply_markup=keyboard(("👍", "rate:5")))
    fake.press_button(7, sent.message_id, "rate:5", language_code="es")

    [update] = await bot.get_updates()
    query = update.callback_query
    assert query.data == "rate:5" and query.from_user.language_code == "es"
    assert query.message.message_id == sent.message_id and query.message.text == "Rate us"
    assert query.message.from_user.id == bot.id
    assert await query.answer("Thanks")
    with pytest.raises(BadRequest, match=r"(?i)query id is invalid"):
        await query.answer()
    with pytest.raises(ValueError, match=r"(?i)no button"):
        fake.press_button(7, sent.message_id, "rate:1")


async def test_edit_message_text_and_not_modified(bot: Bot, fake: FakeTelegram) -> None:
    sent = await bot.send_message(7, "Question?", reply_markup=keyboard(("A", "a")))
    edited = await bot.edit_message_text("Answered", chat_id=7, message_id=sent.message_id)
    assert edited.text == "Answered" and edited.reply_markup is None  # no markup given: keyboard removed
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("Answered", chat_id=7, message_id=sent.message_id)
    assert [m["method"] for m in fake.messages_to(7)] == ["sendMessage", "editMessageText"]
    assert fake.history(7)[0]["text"] == "Answered"


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_rate_limit_raises_retry_after(bot: Bot, fake: FakeTelegram) -> None:
    fake.fail_next("sendMessage")
    with pytest.raises(RetryAfter) as raised:
        await bot.send_message(1, "hi")
    assert raised.value.retry_after in (1, dtm.timedelta(seconds=1))  # seconds, or a timedelta from PTB 22.2 on
    await bot.send_message(1, "hi")  # only the next call failed
    assert [c.status for c in fake.calls_to("sendMessage")] == [429, 200]


async def test_blocked_user_is_forbidden(bot: Bot, fake: FakeTelegram) -> None:
    fake.block_chat(5)
    with pytest.raises(Forbidden, match=r"(?i)blocked by the user"):
        await bot.send_message(5, "hi")
    with pytest.raises(Forbidden):
        await bot.send_chat_action(5, "typing")


async def test_text_limits(bot: Bot) -> None:
    await bot.send_message(1, "x" * 4096)
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(1, "x" * 4097)
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(1, "   ")


async def test_callback_data_is_limited_to_64_bytes(bot: Bot) -> None:
    await bot.send_message(1, "ok", reply_markup=keyboard(("fits", "x" * 64)))
    with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(1, "no", reply_markup=keyboard(("too long", "é" * 33)))  # 33 chars, 66 bytes


async def test_migrated_group_raises_chat_migrated(bot: Bot, fake: FakeTelegram) -> None:
    fake.fail_next(
        "sendMessage",
        status=400,
        description="Bad Request: group chat was upgraded to a supergroup chat",
        migrate_to_chat_id=-1001234,
    )
    with pytest.raises(ChatMigrated) as caught:
        await bot.send_message(-1234, "alert")
    assert caught.value.new_chat_id == -1001234

    old, new = fake.migrate_chat(-555)
    assert old["message"]["migrate_to_chat_id"] == new["message"]["chat"]["id"] == -100555
    with pytest.raises(ChatMigrated):
        await bot.send_message(-555, "alert")
    assert (await bot.send_message(-100555, "alert")).chat.type == "supergroup"


async def test_commands_are_stored_per_scope_and_language(bot: Bot, fake: FakeTelegram) -> None:
    await bot.set_my_commands([BotCommand("start", "Start"), BotCommand("help", "Help")])
    await bot.set_my_commands([BotCommand("start", "Inicio")], language_code="es")
    await bot.set_my_commands([BotCommand("reply", "Reply")], scope=BotCommandScopeAllGroupChats())

    assert [c.command for c in await bot.get_my_commands()] == ["start", "help"]
    assert [c.description for c in await bot.get_my_commands(language_code="es")] == ["Inicio"]
    assert fake.commands(language_code="es") == [{"command": "start", "description": "Inicio"}]
    assert fake.commands({"type": "all_group_chats"}) == [{"command": "reply", "description": "Reply"}]
    assert await bot.delete_my_commands(language_code="es")
    assert await bot.get_my_commands(language_code="es") == ()
    with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand("Bad-Command", "x")])


async def test_group_reply_to_bot_message_includes_the_replied_message(bot: Bot, fake: FakeTelegram) -> None:
    alert = await bot.send_message(-1009, "Patient 42 needs help")
    fake.reply_to_bot(-1009, "Calling her now", user_id=77)

    [update] = await bot.get_updates()
    message = update.message
    assert message.chat.type == "supergroup" and message.chat.id == -1009 and message.from_user.id == 77
    assert message.reply_to_message.message_id == alert.message_id
    assert message.reply_to_message.from_user.id == bot.id
    assert message.reply_to_message.text == "Patient 42 needs help"


async def test_copy_and_forward_user_messages(bot: Bot, fake: FakeTelegram) -> None:
    update = fake.send_photo(42, caption="my skin today")
    message_id = update["message"]["message_id"]
    copied = await bot.copy_message(-1009, from_chat_id=42, message_id=message_id, caption="From patient 42")
    forwarded = await bot.forward_message(-1009, from_chat_id=42, message_id=message_id)
    assert forwarded.forward_origin.sender_user.id == 42 and forwarded.photo
    assert [(m["method"], m["text"]) for m in fake.messages_to(-1009)] == [
        ("copyMessage", "From patient 42"),
        ("forwardMessage", "my skin today"),
    ]
    assert copied.message_id == fake.messages_to(-1009)[0]["message_id"]
    with pytest.raises(BadRequest, match=r"(?i)message to copy not found"):
        await bot.copy_message(-1009, from_chat_id=42, message_id=999)


async def test_html_is_parsed_and_validated(bot: Bot, fake: FakeTelegram) -> None:
    sent = await bot.send_message(1, "<b>Swelling</b> &lt;48h", parse_mode=ParseMode.HTML)
    assert sent.text == "Swelling <48h" and sent.entities[0].type == "bold" and sent.entities[0].length == 8
    assert fake.last_message_to(1)["raw_text"] == "<b>Swelling</b> &lt;48h"
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await bot.send_message(1, "<b>open", parse_mode=ParseMode.HTML)
    with pytest.raises(BadRequest, match=r"(?i)reserved"):
        await bot.send_message(1, "Done.", parse_mode=ParseMode.MARKDOWN_V2)


async def test_multipart_upload_json_body_and_get_query(bot: Bot, fake: FakeTelegram) -> None:
    sent = await bot.send_photo(3, photo=b"\x89PNG fake", caption="leaflet")
    assert sent.caption == "leaflet" and sent.photo
    call = fake.calls_to("sendPhoto")[0]
    assert call.params["chat_id"] == 3 and next(iter(call.files.values())).data == b"\x89PNG fake"

    body = json.dumps({"chat_id": 3, "text": "json", "reply_markup": {"inline_keyboard": [[]]}}).encode()
    request = urllib.request.Request(f"{fake.api_url}/sendMessage", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.load(response)["result"]["text"] == "json"
    with urllib.request.urlopen(f"{fake.api_url}/getChat?chat_id=3", timeout=5) as response:
        assert json.load(response)["result"]["type"] == "private"
    assert fake.calls[-1].http_method == "GET"


async def test_delay_and_wait_for_timeout_lists_calls(bot: Bot, fake: FakeTelegram) -> None:
    fake.delay("getChat", 0.2)
    started = time.monotonic()
    await bot.get_chat(1)
    assert time.monotonic() - started >= 0.2
    with pytest.raises(AssertionError, match=r"(?i)getChat -> 200"):
        await fake.wait_for("sendMessage", timeout=0.1)
    with pytest.raises(AssertionError):
        fake.wait_for_sync("sendMessage", timeout=0.1)


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str | None, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.headers.get("X-Telegram-Bot-Api-Secret-Token"), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_webhook_mode(bot: Bot, fake: FakeTelegram) -> None:
    _Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        await bot.set_webhook(url, secret_token="s3cret")
        assert (await bot.get_webhook_info()).url == url
        with pytest.raises(Conflict):
            await bot.get_updates()

        update = fake.send_text(9, "hello", enqueue=False)
        fake.push_twice(update)
        deadline = time.monotonic() + 3
        while len(_Collector.received) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert [(secret, body["update_id"]) for secret, body in _Collector.received] == [
            ("s3cret", update["update_id"])
        ] * 2
        assert fake.post_webhook(url, update, "s3cret")[0] == 200
        await bot.delete_webhook()
        assert (await bot.get_webhook_info()).url == ""
    finally:
        server.shutdown()
        server.server_close()


async def test_ptb_application_polls_and_answers(fake: FakeTelegram) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.message.reply_text("Welcome", reply_markup=keyboard(("Help", "help")))

    async def pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.callback_query.answer()
        await update.callback_query.edit_message_text(f"You chose {update.callback_query.data}")

    app = Application.builder().token(fake.token).base_url(fake.base_url).build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CallbackQueryHandler(pressed))
    async with app:
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=1)
        await fake.wait_for_polling()
        fake.send_text(42, "/start")
        welcome = await fake.wait_for("sendMessage", lambda c: c.params["chat_id"] == 42)
        fake.click(42, "Help")
        await fake.wait_for("answerCallbackQuery")
        edit = await fake.wait_for("editMessageText")
        assert edit.params["message_id"] == welcome.result["message_id"]
        assert fake.last_message_to(42)["text"] == "You chose help"
        await app.updater.stop()
        await app.stop()
    assert fake.pending_updates == []


# ------------------------------------------------------------------------------------------------
# Fault injection and flood limits
# ------------------------------------------------------------------------------------------------


def post(fake: FakeTelegram, method: str, *, as_json: bool = False, **params: Any) -> tuple[int, dict[str, Any], str]:
    """One raw Bot API request over HTTP: (status, decoded JSON body or {"html": text}, content type)."""
    if as_json:
        data, content_type = json.dumps(params).encode(), "application/json"
    else:
        form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
        data, content_type = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
    request = urllib.request.Request(f"{fake.api_url}/{method}", data, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, kind, body = response.status, response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as exc:
        status, kind, body = exc.code, exc.headers.get_content_type(), exc.read()
    decoded = json.loads(body) if kind == "application/json" else {"html": body.decode()}
    return status, decoded, kind


def seconds(value: int | dtm.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def test_fail_answers_like_telegram_for_each_status_and_does_not_perform(fake: FakeTelegram) -> None:
    expected = {
        500: "Internal Server Error",
        502: "Bad Gateway",
        400: "Bad Request: chat not found",
        403: "Forbidden: bot was blocked by the user",
        401: "Unauthorized",
    }
    for status in expected:
        fake.fail("sendMessage", status=status)
    fake.fail("sendMessage", status=429, retry_after=7)
    for status, description in expected.items():
        assert post(fake, "sendMessage", chat_id=42, text="hi") == (
            status,
            {"ok": False, "error_code": status, "description": description},
            "application/json",
        )
    status, body, _ = post(fake, "sendMessage", chat_id=42, text="hi")
    assert (status, body["description"], body["parameters"]) == (
        429,
        "Too Many Requests: retry after 7",
        {"retry_after": 7},
    )
    assert fake.messages_to(42) == [] and fake.history(42) == []
    assert post(fake, "sendMessage", chat_id=42, text="hi")[0] == 200  # all scripted faults used up
    assert [c.status for c in fake.calls_to("sendMessage")] == [500, 502, 400, 403, 401, 429, 200]
    assert fake.pending_faults == []


def test_fail_per_chat_only_hits_requests_to_that_chat(fake: FakeTelegram) -> None:
    fake.fail("sendMessage", chat_id=42, status=403, times=2)
    assert post(fake, "sendMessage", chat_id=7, text="other chat")[0] == 200
    assert post(fake, "getMe")[0] == 200  # no chat_id: a per-chat fault does not apply
    assert post(fake, "sendMessage", chat_id="42", text="form field")[0] == 403
    assert fake.pending_faults == ["fail sendmessage chat_id=42: 403 (x1)"]
    assert post(fake, "sendMessage", as_json=True, chat_id="42", text="string in JSON")[0] == 403
    assert post(fake, "sendMessage", chat_id=42, text="delivered")[0] == 200
    assert [m["text"] for m in fake.messages_to(42)] == ["delivered"]
    assert [m["text"] for m in fake.messages_to(7)] == ["other chat"]


def test_faults_are_taken_in_the_order_they_were_scripted(fake: FakeTelegram) -> None:
    fake.fail_next("sendMessage")
    fake.fail("sendMessage", status=500)
    fake.fail("*", status=503, times=None)  # every method, until cleared
    assert [post(fake, "sendMessage", chat_id=1, text="x")[0] for _ in range(3)] == [429, 500, 503]
    assert post(fake, "getMe")[0] == 503
    fake.clear_faults()
    assert post(fake, "getMe")[0] == 200
    with pytest.raises(ValueError):
        fake.fail("getMe", times=0)


def test_fail_with_html_body_is_nginx_error_page(fake: FakeTelegram) -> None:
    fake.fail("sendMessage", status=502, html=True)
    status, body, kind = post(fake, "sendMessage", chat_id=1, text="x")
    assert (status, kind) == (502, "text/html")
    assert "<title>502 Bad Gateway</title>" in body["html"] and "nginx" in body["html"]
    assert fake.messages_to(1) == [] and fake.calls_to("sendMessage")[0].status == 502


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_ptb_raises_the_matching_error_for_each_fault(bot: Bot, fake: FakeTelegram) -> None:
    fake.fail("sendMessage", status=500)
    with pytest.raises(NetworkError, match="Internal Server Error") as server_error:
        await bot.send_message(1, "x")
    assert type(server_error.value) is NetworkError
    fake.fail("sendMessage", status=502, html=True)
    with pytest.raises(NetworkError, match=r"Bad Gateway \(502\)\. Parsing the server response") as gateway:
        await bot.send_message(1, "x")
    assert type(gateway.value) is NetworkError
    fake.fail("sendMessage", status=400)
    with pytest.raises(BadRequest, match=r"(?i)^chat not found$"):
        await bot.send_message(1, "x")
    fake.fail("sendMessage", status=403)
    with pytest.raises(Forbidden, match=r"(?i)blocked by the user"):
        await bot.send_message(1, "x")
    fake.fail("sendMessage", status=401)
    with pytest.raises(InvalidToken, match="Unauthorized"):
        await bot.send_message(1, "x")
    fake.fail("sendMessage", status=429, retry_after=3)
    with pytest.raises(RetryAfter) as flood:
        await bot.send_message(1, "x")
    assert seconds(flood.value.retry_after) == 3
    assert fake.messages_to(1) == []
    assert (await bot.send_message(1, "finally")).text == "finally"


async def test_drop_closes_the_connection_without_performing(bot: Bot, fake: FakeTelegram) -> None:
    fake.drop("sendMessage", chat_id=42)
    assert (await bot.send_message(7, "other chat")).chat.id == 7
    with pytest.raises(NetworkError, match="without sending a response"):
        await bot.send_message(42, "lost")
    assert fake.messages_to(42) == []
    call = fake.calls_to("sendMessage")[-1]
    assert call.dropped and call.status == 0 and not call.ok and "dropped" in str(call)
    assert (await bot.send_message(42, "retried")).text == "retried"  # a new connection works

    fake.drop("getMe")
    with pytest.raises(http.client.RemoteDisconnected):
        urllib.request.urlopen(f"{fake.api_url}/getMe", timeout=5)
    fake.drop("getMe")
    with pytest.raises(ConnectionDropped):  # the in-process entry point fails the same way
        fake._dispatch("POST", f"/bot{fake.token}/getMe", "", "", b"")


async def test_drop_after_processing_delivers_but_loses_the_answer(bot: Bot, fake: FakeTelegram) -> None:
    fake.drop("sendMessage", after_processing=True)
    with pytest.raises(NetworkError):
        await bot.send_message(42, "Take your antibiotic")
    [lost] = fake.messages_to(42)
    assert lost["text"] == "Take your antibiotic" and lost["response_lost"]
    call = fake.calls_to("sendMessage")[0]
    assert call.dropped and call.status == 200

    fake.assert_no_duplicate_deliveries()
    await bot.send_message(42, "Take your antibiotic")  # a naive retry: the patient gets it twice
    assert fake.delivery_count(42, "Take your antibiotic") == 2
    assert fake.duplicate_deliveries() == {(42, "Take your antibiotic"): 2}
    with pytest.raises(AssertionError, match=r"2x to 42"):
        fake.assert_no_duplicate_deliveries(42)
    fake.assert_no_duplicate_deliveries(7)


async def test_stall_slows_only_the_matching_calls(bot: Bot, fake: FakeTelegram) -> None:
    fake.stall("sendMessage", chat_id=42, seconds=0.3)
    started = time.monotonic()
    await bot.send_message(7, "fast")
    assert time.monotonic() - started < 0.2
    await bot.send_message(42, "slow")
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    await bot.send_message(42, "fast again")
    assert time.monotonic() - started < 0.2
    with pytest.raises(ValueError):
        fake.stall("sendMessage", seconds=-1)


async def test_stalled_request_that_times_out_is_still_delivered(bot: Bot, fake: FakeTelegram) -> None:
    fake.stall("sendMessage", seconds=0.4)
    with pytest.raises(TimedOut):
        await bot.send_message(42, "Are you in pain?", read_timeout=0.1)
    assert fake.messages_to(42) == []  # still stalled: not performed yet
    call = await fake.wait_for("sendMessage", timeout=2)
    assert call.ok and [m["text"] for m in fake.messages_to(42)] == ["Are you in pain?"]


async def test_stall_after_processing_delivers_before_answering(bot: Bot, fake: FakeTelegram) -> None:
    fake.stall("sendMessage", seconds=0.3, after_processing=True)
    sending = asyncio.create_task(bot.send_message(42, "hello"))
    deadline = time.monotonic() + 2
    while not fake.messages_to(42) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert fake.messages_to(42) and not sending.done()
    assert (await sending).text == "hello"


async def test_stall_combines_with_a_failure(bot: Bot, fake: FakeTelegram) -> None:
    fake.stall("sendMessage", seconds=0.2)
    fake.fail("sendMessage", status=504)
    started = time.monotonic()
    with pytest.raises(NetworkError, match="Gateway Timeout"):
        await bot.send_message(1, "x")
    assert time.monotonic() - started >= 0.2


async def test_revoked_token_gets_401_everywhere_until_restored(bot: Bot, fake: FakeTelegram) -> None:
    polling = asyncio.create_task(bot.get_updates(timeout=5))
    await fake.wait_for_polling()
    started = time.monotonic()
    fake.revoke_token()
    with pytest.raises(InvalidToken, match="Unauthorized"):
        await polling  # the parked long poll is answered at once
    assert time.monotonic() - started < 1
    with pytest.raises(InvalidToken):
        await bot.get_me()
    assert post(fake, "sendMessage", chat_id=1, text="x")[:2] == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    assert post(fake, "sendMessage", chat_id=1, text="")[0] == 401  # even before validating the request
    assert fake.messages_to(1) == [] and fake.token_revoked
    assert [c.status for c in fake.calls_to("sendMessage")] == [401, 401]
    fake.restore_token()
    assert (await bot.send_message(1, "back")).text == "back"


def test_limits_are_off_by_default(fake: FakeTelegram) -> None:
    assert all(post(fake, "sendMessage", chat_id=1, text=f"m{i}")[0] == 200 for i in range(10))
    assert fake.flood_errors == 0


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_private_chat_burst_then_429(bot: Bot, fake: FakeTelegram) -> None:
    fake.enforce_limits(chat_burst=3, per_chat_per_second=1)
    for i in range(3):
        await bot.send_message(42, f"m{i}")
    with pytest.raises(RetryAfter) as flood:
        await bot.send_message(42, "too fast")
    assert seconds(flood.value.retry_after) == 1
    assert [m["text"] for m in fake.messages_to(42)] == ["m0", "m1", "m2"]  # the 429 was not performed
    for _ in range(5):
        await bot.send_chat_action(42, "typing")  # not a message: not limited
    await bot.send_message(7, "another chat has its own bucket")
    status, body, _ = post(fake, "sendMessage", chat_id=42, text="raw")
    assert (status, body["parameters"]["retry_after"]) == (429, 1)
    assert body["description"] == "Too Many Requests: retry after 1"
    assert fake.flood_errors == 2 and fake.flood_errors_for(42) == 2 and fake.flood_errors_for(7) == 0

    fake.enforce_limits(enabled=False)
    await bot.send_message(42, "limits off")
    assert fake.flood_errors == 2


async def test_private_chat_bucket_refills(fake: FakeTelegram) -> None:
    fake.enforce_limits(chat_burst=1, per_chat_per_second=20)
    assert post(fake, "sendMessage", chat_id=42, text="a")[0] == 200
    assert post(fake, "sendMessage", chat_id=42, text="b")[0] == 429
    time.sleep(0.08)  # one message per 50 ms
    assert post(fake, "sendMessage", chat_id=42, text="c")[0] == 200


def test_failed_sends_do_not_use_up_the_limits(fake: FakeTelegram) -> None:
    fake.enforce_limits(chat_burst=1)
    fake.fail("sendMessage", status=500)
    assert post(fake, "sendMessage", chat_id=42, text="a")[0] == 500
    assert post(fake, "sendMessage", chat_id=42, text="")[0] == 400
    assert post(fake, "sendMessage", chat_id=42, text="b")[0] == 200
    assert post(fake, "editMessageText", chat_id=42, message_id=1, text="edited")[0] == 429  # edits count


def test_group_is_limited_per_minute(fake: FakeTelegram) -> None:
    fake.enforce_limits(per_group_per_minute=2, chat_burst=10)
    group = -1001234
    assert post(fake, "sendMessage", chat_id=group, text="alert 1")[0] == 200
    fake.send_photo(42)
    assert post(fake, "copyMessage", chat_id=group, from_chat_id=42, message_id=1)[0] == 200
    status, body, _ = post(fake, "sendMessage", chat_id=group, text="alert 3")
    assert status == 429 and 59 <= body["parameters"]["retry_after"] <= 60
    assert body["description"] == f"Too Many Requests: retry after {body['parameters']['retry_after']}"
    assert post(fake, "sendMessage", chat_id=-1005678, text="another group")[0] == 200
    assert all(post(fake, "sendMessage", chat_id=42, text=f"p{i}")[0] == 200 for i in range(3))
    assert fake.flood_errors_for(group) == 1 and len(fake.deliveries(group)) == 2


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_bot_is_limited_per_second_across_chats(bot: Bot, fake: FakeTelegram) -> None:
    fake.enforce_limits(per_bot_per_second=4)
    for chat_id in range(1, 5):
        await bot.send_message(chat_id, "broadcast")
    with pytest.raises(RetryAfter) as flood:
        await bot.send_message(5, "broadcast")
    assert seconds(flood.value.retry_after) == 1
    assert fake.flood_errors == 1 and fake.flood_errors_for(5) == 1
    assert len(fake.deliveries()) == 4


async def test_deliveries_lists_new_messages_in_order(bot: Bot, fake: FakeTelegram) -> None:
    user_photo = fake.send_photo(42, caption="my skin")["message"]["message_id"]
    first = await bot.send_message(42, "Hello")
    await bot.edit_message_text("Hello!", chat_id=42, message_id=first.message_id)
    await bot.send_photo(42, photo=b"\x89PNG", caption="leaflet")
    await bot.copy_message(-1009, from_chat_id=42, message_id=user_photo)
    await bot.send_message(-1009, "Patient 42 wrote")
    await bot.send_message(42, "Hello")
    with pytest.raises(BadRequest):
        await bot.send_message(42, "")

    assert [(d["method"], d["chat_id"], d["text"]) for d in fake.deliveries()] == [
        ("sendMessage", 42, "Hello"),
        ("sendPhoto", 42, "leaflet"),
        ("copyMessage", -1009, "my skin"),
        ("sendMessage", -1009, "Patient 42 wrote"),
        ("sendMessage", 42, "Hello"),
    ]
    assert [d["text"] for d in fake.deliveries(-1009)] == ["my skin", "Patient 42 wrote"]
    assert fake.delivery_count(42, "Hello") == 2 and fake.delivery_count(42, "Hello!") == 0
    assert fake.duplicate_deliveries() == {(42, "Hello"): 2}
    assert fake.duplicate_deliveries(-1009) == {}
    fake.clear()
    assert fake.deliveries() == [] and fake.duplicate_deliveries() == {}
