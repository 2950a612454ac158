"""The fake Bot API server speaks what a real PTB 22 Bot expects, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time
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
from telegram.error import BadRequest, ChatMigrated, Conflict, EndPointNotFound, Forbidden, InvalidToken, RetryAfter
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from tests.fake_telegram import FakeTelegram


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
    with pytest.raises(RetryAfter, match="Retry in 1 "):
        await bot.send_message(1, "hi")
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
