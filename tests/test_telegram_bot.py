"""The real PTB Application, its Bot API calls answered in process by the fake Telegram server.

Whole conversations: start, questions in each language, buttons, feedback, "did you mean",
triage with the staff alert, handoff both ways, /stop, /forget, odd messages, duplicates.
"""

from __future__ import annotations

from typing import Any

import pytest
from telegram.ext import Application

from bot.config import Config
from bot.core.conversation import Action, Assistant, Kind
from bot.store import Store
from bot.telegram.app import register_bot_commands
from tests.conftest import STAFF_CHAT, STAFF_USER, deliver
from tests.fake_telegram import FakeTelegram

App = Application  # type: ignore[type-arg]
PATIENT = 5550001
Shipped = tuple[Config, Assistant]


def texts(fake: FakeTelegram, chat_id: int) -> list[str]:
    return [m["text"] for m in fake.messages_to(chat_id)]


def button_data(message: dict[str, Any]) -> list[str]:
    markup = message.get("reply_markup") or {}
    return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row if "callback_data" in b]


def strip(text: str) -> str:
    return text.strip()


async def say(app: App, fake: FakeTelegram, text: str, *, lang: str = "en", chat_id: int = PATIENT) -> dict[str, Any]:
    fake.clear()
    await deliver(app, fake.send_text(chat_id, text, language_code=lang, enqueue=False))
    return fake.last_message_to(chat_id)


async def press(app: App, fake: FakeTelegram, message: dict[str, Any], data: str, chat_id: int = PATIENT) -> None:
    fake.clear()
    await deliver(app, fake.press_button(chat_id, message["message_id"], data, enqueue=False))


async def test_start_greets_in_the_users_language_with_a_menu(app: App, fake: FakeTelegram, shipped: Shipped) -> None:
    assistant = shipped[1]
    reply = await say(app, fake, "/start", lang="it")
    assert reply["text"] == strip(assistant.text("it", "welcome"))
    assert Action.MENU in button_data(reply)
    # An unsupported Telegram language falls back to the clinic's default.
    reply = await say(app, fake, "/start", lang="fr", chat_id=PATIENT + 1)
    assert reply["text"] == strip(assistant.text("en", "welcome"))


@pytest.mark.parametrize(
    ("lang", "question", "topic"),
    [
        ("en", "when can I put make-up back on?", "makeup"),
        ("it", "quando posso tornare in palestra dopo la meso?", "exercise_heat"),
        ("pl", "kiedy moge wrocic na silownie po mezoterapii", "exercise_heat"),
        ("es", "cuando puedo volver a maquillarme?", "makeup"),
    ],
)
async def test_questions_are_answered_with_feedback_and_related_topics(
    app: App, fake: FakeTelegram, store: Store, shipped: Shipped, lang: str, question: str, topic: str
) -> None:
    assistant = shipped[1]
    reply = await say(app, fake, question, lang=lang)
    assert reply["text"] == assistant.topic_reply(topic, lang).text
    data = button_data(reply)
    assert f"{Action.FEEDBACK}1:{topic}" in data and any(d.startswith(Action.TOPIC) for d in data)
    await press(app, fake, reply, f"{Action.FEEDBACK}1:{topic}")
    assert fake.last_message_to(PATIENT)["text"] == strip(assistant.text(lang, "feedback_thanks"))
    stats = store.stats(since=reply_time(reply))
    assert (stats.answered, stats.helpful) == (1, 1)


def reply_time(message: dict[str, Any]) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) - timedelta(hours=1)


async def test_thumbs_down_keeps_the_question_for_curators(
    app: App, fake: FakeTelegram, store: Store, shipped: Shipped
) -> None:
    reply = await say(app, fake, "when can I put make-up back on?")
    await press(app, fake, reply, f"{Action.FEEDBACK}0:makeup")
    assert Action.HANDOFF in button_data(fake.last_message_to(PATIENT))
    kept = store.kept_questions(since=reply_time(reply))
    assert [(k.text, k.reason) for k in kept] == [("when can I put make-up back on?", "unhelpful")]


async def test_unknown_question_gets_the_fallback_with_contacts_and_is_kept(
    app: App, fake: FakeTelegram, store: Store, shipped: Shipped
) -> None:
    config, assistant = shipped
    reply = await say(app, fake, "what is the capital of Australia?")
    assert reply["text"] == strip(assistant.text("en", "fallback"))
    assert config.facts("en")["clinic_phone"] in reply["text"]
    assert Action.HANDOFF in button_data(reply)
    assert [k.reason for k in store.kept_questions(since=reply_time(reply))] == ["fallback"]


async def test_emergency_gets_the_safety_message_and_alerts_staff(
    app: App, fake: FakeTelegram, store: Store, shipped: Shipped
) -> None:
    assistant = shipped[1]
    fake.clear()
    update = fake.send_text(
        PATIENT,
        "my lips are swelling fast and I can't breathe",
        first_name="Giulia",
        username="giu",
        language_code="en",
        enqueue=False,
    )
    await deliver(app, update)
    assert fake.last_message_to(PATIENT)["text"] == strip(assistant.text("en", "safety_emergency"))
    alert = fake.last_message_to(STAFF_CHAT)["text"]
    assert "Giulia (@giu)" in alert and "my lips are swelling fast" in alert and "EMERGENCY" in alert
    assert store.stats(since=reply_time({})).escalations == 1


async def test_handoff_both_ways_until_staff_close_it(
    app: App, fake: FakeTelegram, store: Store, shipped: Shipped
) -> None:
    assistant = shipped[1]
    fallback = await say(app, fake, "what is the capital of Australia? my son asks")
    await press(app, fake, fallback, Action.HANDOFF)
    assert fake.last_message_to(PATIENT)["text"] == strip(assistant.text("en", "handoff_started"))
    post = fake.last_message_to(STAFF_CHAT)
    assert "capital of Australia" in post["text"]

    # A staff member replies to the post in the staff group: the patient receives it from the bot.
    fake.clear()
    await deliver(
        app,
        fake.reply_to_bot(
            STAFF_CHAT,
            "Of course, small dogs are welcome!",
            reply_to_message_id=post["message_id"],
            user_id=STAFF_USER,
            enqueue=False,
        ),
    )
    relayed = fake.last_message_to(PATIENT)["text"]
    assert relayed.startswith(strip(assistant.text("en", "staff_reply_prefix")))
    assert relayed.endswith("Of course, small dogs are welcome!")

    # While the conversation is open, the patient's messages go to the staff chat, not to the FAQ.
    fake.clear()
    await deliver(app, fake.send_text(PATIENT, "great, and can I wear make-up tomorrow?", enqueue=False))
    assert fake.messages_to(PATIENT) == []
    assert "can I wear make-up tomorrow" in fake.last_message_to(STAFF_CHAT)["text"]

    # Staff close it; the bot answers again.
    staff_post = fake.last_message_to(STAFF_CHAT)
    close = next(d for d in button_data(staff_post) if d.startswith("z:"))
    fake.clear()
    await deliver(
        app, fake.press_button(STAFF_CHAT, staff_post["message_id"], close, user_id=STAFF_USER, enqueue=False)
    )
    assert fake.last_message_to(PATIENT)["text"] == strip(assistant.text("en", "handoff_closed"))
    reply = await say(app, fake, "when can I put make-up back on?")
    assert reply["text"] == assistant.topic_reply("makeup", "en").text


async def test_stop_and_forget(app: App, fake: FakeTelegram, store: Store, shipped: Shipped) -> None:
    assistant = shipped[1]
    await say(app, fake, "/start", lang="pl")
    await say(app, fake, "kiedy moge sie umalowac?", lang="pl")
    reply = await say(app, fake, "/stop", lang="pl")
    assert reply["text"] == strip(assistant.text("pl", "stopped"))
    patient = store.get_patient(PATIENT)
    assert patient is not None and patient.stopped
    await say(app, fake, "czesc", lang="pl")
    patient = store.get_patient(PATIENT)
    assert patient is not None and not patient.stopped

    confirm = await say(app, fake, "/forget", lang="pl")
    assert store.count_rows_for(PATIENT) > 0
    await press(app, fake, confirm, Action.FORGET_YES)
    assert fake.last_message_to(PATIENT)["text"] == strip(assistant.text("pl", "forget_done"))
    assert store.count_rows_for(PATIENT) == 0


async def test_language_menu_changes_and_remembers_the_language(
    app: App, fake: FakeTelegram, store: Store, shipped: Shipped
) -> None:
    assistant = shipped[1]
    menu = await say(app, fake, "/language")
    assert f"{Action.LANGUAGE}es" in button_data(menu)
    await press(app, fake, menu, f"{Action.LANGUAGE}es")
    patient = store.get_patient(PATIENT)
    assert patient is not None and patient.lang == "es"
    reply = await say(app, fake, "/help", lang="en")
    assert reply["text"] == strip(assistant.text("es", "help"))


async def test_topics_browse_by_category_within_callback_limits(app: App, fake: FakeTelegram, shipped: Shipped) -> None:
    assistant = shipped[1]
    menu = await say(app, fake, "/topics")
    categories = button_data(menu)
    assert len(categories) == len(assistant.content.topics.categories)
    seen_topics: list[str] = []
    first_page: dict[str, Any] = {}
    for category in categories:
        await press(app, fake, menu, category)
        page = fake.last_message_to(PATIENT)
        data = button_data(page)
        first_page = first_page or page
        seen_topics += [d for d in data if d.startswith(Action.TOPIC)]
        while any(d.startswith(Action.CATEGORY) for d in data):
            nxt = next(d for d in data if d.startswith(Action.CATEGORY))
            await press(app, fake, page, nxt)
            page = fake.last_message_to(PATIENT)
            data = button_data(page)
            seen_topics += [d for d in data if d.startswith(Action.TOPIC)]
    assert len(set(seen_topics)) == len(assistant.content.topics.topics)
    assert all(len(d.encode()) <= 64 for d in seen_topics)
    await press(app, fake, first_page, seen_topics[0])
    assert fake.last_message_to(PATIENT)["text"] == assistant.topic_reply(seen_topics[0][2:], "en").text


async def test_unsure_question_offers_did_you_mean(app: App, fake: FakeTelegram, shipped: Shipped) -> None:
    assistant = shipped[1]
    # The adapter is under test here, so take a vague message the core is unsure about.
    vague = ["skin", "face", "cream", "sun and gym", "swelling bruise", "ok", "after"]
    message = next(m for m in vague if assistant.answer(m, "en").kind is Kind.UNSURE)
    reply = await say(app, fake, message)
    assert reply["text"] == strip(assistant.text("en", "did_you_mean"))
    data = button_data(reply)
    topics = [d for d in data if d.startswith(Action.TOPIC)]
    assert len(topics) >= 2 and Action.HANDOFF in data
    await press(app, fake, reply, topics[0])
    assert fake.last_message_to(PATIENT)["text"] == assistant.topic_reply(topics[0][2:], "en").text


async def test_non_text_messages_get_a_polite_reply(app: App, fake: FakeTelegram, shipped: Shipped) -> None:
    assistant = shipped[1]
    expected = strip(assistant.text("en", "unsupported_message"))
    for update in (
        fake.send_sticker(PATIENT, enqueue=False),
        fake.send_photo(PATIENT, enqueue=False),
        fake.send_voice(PATIENT, enqueue=False),
        fake.send_location(PATIENT, enqueue=False),
    ):
        fake.clear()
        await deliver(app, update)
        assert texts(fake, PATIENT) == [expected]


async def test_very_long_and_edited_messages(app: App, fake: FakeTelegram, shipped: Shipped) -> None:
    assistant = shipped[1]
    reply = await say(app, fake, "when can I put make-up back on? " + "I am so worried, " * 250)
    assert reply["text"].startswith(strip(assistant.text("en", "message_too_long")))
    original = fake.send_text(PATIENT, "sunscren??", enqueue=False)
    await deliver(app, original)
    fake.clear()
    await deliver(
        app, fake.edit_text(PATIENT, original["message"]["message_id"], "when can I wear make-up?", enqueue=False)
    )
    assert fake.last_message_to(PATIENT)["text"] == assistant.topic_reply("makeup", "en").text


async def test_groups_are_silent_unless_addressed(app: App, fake: FakeTelegram) -> None:
    group = -4242
    fake.clear()
    await deliver(app, fake.send_text(group, "when can I wear make-up?", user_id=777, enqueue=False))
    await deliver(app, fake.send_sticker(group, user_id=777, enqueue=False))
    assert fake.messages_to(group) == []
    await deliver(
        app, fake.send_text(group, "@aftercare_test_bot when can I wear make-up?", user_id=777, enqueue=False)
    )
    assert len(fake.messages_to(group)) == 1


async def test_an_update_delivered_twice_is_handled_once(app: App, fake: FakeTelegram) -> None:
    update = fake.send_text(PATIENT, "when can I wear make-up?", enqueue=False)
    fake.clear()
    await deliver(app, update)
    await deliver(app, update)
    assert len(fake.messages_to(PATIENT)) == 1


async def test_staff_commands_only_for_staff(app: App, fake: FakeTelegram, shipped: Shipped) -> None:
    assistant = shipped[1]
    await say(app, fake, "when can I wear make-up?")
    fake.clear()
    await deliver(app, fake.send_text(STAFF_CHAT, "/stats", user_id=STAFF_USER, enqueue=False))
    stats = fake.last_message_to(STAFF_CHAT)["text"]
    assert "questions answered: 1" in stats
    reply = await say(app, fake, "/stats")
    assert reply["text"] == strip(assistant.text("en", "not_allowed"))
    fake.clear()
    await deliver(app, fake.send_text(-999, "/stats", user_id=31337, enqueue=False))
    assert fake.messages_to(-999) == []


async def test_staff_group_migration_is_followed(app: App, fake: FakeTelegram, store: Store, shipped: Shipped) -> None:
    new_id = -1009999999999
    for update in fake.migrate_chat(STAFF_CHAT, new_id, enqueue=False):
        await deliver(app, update)
    fake.clear()
    await deliver(app, fake.send_text(PATIENT, "I have a fever of 39 and pus on my cheek", enqueue=False))
    assert "pus on my cheek" in fake.last_message_to(new_id)["text"]


async def test_blocked_patient_is_marked_stopped(app: App, fake: FakeTelegram, store: Store) -> None:
    await say(app, fake, "/start")
    fake.block_chat(PATIENT)
    await deliver(app, fake.send_text(PATIENT, "when can I wear make-up?", enqueue=False))
    patient = store.get_patient(PATIENT)
    assert patient is not None and patient.stopped


async def test_commands_are_registered_per_language(app: App, fake: FakeTelegram, shipped: Shipped) -> None:
    assistant = shipped[1]
    await register_bot_commands(app, assistant, STAFF_CHAT)
    for lang, pack in assistant.content.packs.items():
        registered = {c["command"]: c["description"] for c in fake.commands(language_code=lang)}
        assert registered["forget"] == pack.ui.commands.forget


async def test_talk_to_a_person_from_contact_relays_the_next_message(
    app: App, fake: FakeTelegram, shipped: Shipped
) -> None:
    assistant = shipped[1]
    contact = await say(app, fake, "/contact")
    await press(app, fake, contact, Action.HANDOFF)
    assert fake.last_message_to(PATIENT)["text"] == strip(assistant.text("en", "handoff_prompt"))
    fake.clear()
    await deliver(app, fake.send_text(PATIENT, "can I bring my dog to the appointment?", enqueue=False))
    assert fake.messages_to(PATIENT) == []
    assert "can I bring my dog" in fake.last_message_to(STAFF_CHAT)["text"]


async def test_a_failure_while_answering_gets_an_apology_not_silence(
    app: App, fake: FakeTelegram, shipped: Shipped
) -> None:
    assistant = shipped[1]
    fake.clear()
    fake.fail_next("sendMessage", status=400, description="Bad Request: chat not found")
    await deliver(app, fake.send_text(PATIENT, "when can I wear make-up?", enqueue=False))
    assert fake.last_message_to(PATIENT)["text"] == strip(assistant.text("en", "error_generic"))


async def test_answers_longer_than_a_telegram_message_are_split(app: App, fake: FakeTelegram) -> None:
    from bot.core.conversation import Kind, Reply
    from bot.telegram.handlers import Handlers

    handlers = next(
        h.callback.__self__ for h in app.handlers[0] if isinstance(getattr(h.callback, "__self__", None), Handlers)
    )
    paragraphs = "\n\n".join(f"Paragraph {i}: " + " ".join(["take care"] * 60) for i in range(20))
    fake.clear()
    context = type("Context", (), {"bot": app.bot})()
    await handlers._send(context, PATIENT, Reply(paragraphs, Kind.ANSWER, "en"))
    sent = texts(fake, PATIENT)
    assert len(sent) > 1 and all(len(t) <= 4096 for t in sent)
    assert "\n\n".join(sent) == paragraphs
