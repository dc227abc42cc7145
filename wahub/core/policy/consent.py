"""Opt-out and opt-in keywords, and the consent ledger's inbound side.

A contact who writes one of the STOP words (the whole message, any case,
surrounding punctuation ignored) is opted out of every business-initiated
message and gets a confirmation in the language of the word; a START word
opts them back in. Each change is appended to the ledger with the message as
evidence; the current state is always derived from the ledger. Provider
marketing-preference events (Meta's ``user_preferences``) are recorded too,
for the ``marketing`` scope.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wahub.core.errors import InvalidTime

_LOGGER = logging.getLogger(__name__)

#: The earliest time a consent event may carry: 2009-01-01 UTC (WhatsApp began in 2009).
EARLIEST_TIME = 1230768000.0
#: How far ahead of this machine's clock an event's time may be, for clock skew.
MAX_AHEAD = 86400.0

#: Keywords and confirmations per language; a configured language replaces its default.
DEFAULT_LANGUAGES: dict[str, dict[str, Any]] = {
    "en": {
        "stop": ["stop", "stop all", "unsubscribe", "opt out", "optout"],
        "start": ["start", "unstop", "subscribe", "opt in"],
        "opted_out": "You are unsubscribed and will get no more messages from us. Reply START to subscribe again.",
        "opted_in": "You are subscribed again. Reply STOP at any time to unsubscribe.",
    },
    "ru": {
        "stop": ["стоп", "отписаться", "отписка"],
        "start": ["старт", "подписаться"],
        "opted_out": "Вы отписались и больше не будете получать от нас сообщения. "
        "Чтобы подписаться снова, отправьте СТАРТ.",
        "opted_in": "Вы снова подписаны. Чтобы отписаться, отправьте СТОП.",
    },
    "es": {
        "stop": ["baja", "parar", "detener", "cancelar suscripción"],
        "start": ["alta", "suscribir", "reanudar"],
        "opted_out": "Te has dado de baja y no recibirás más mensajes nuestros. "
        "Responde ALTA para volver a suscribirte.",
        "opted_in": "Vuelves a estar suscrito. Responde BAJA cuando quieras darte de baja.",
    },
    "pt": {
        "stop": ["sair", "cancelar inscrição", "descadastrar"],
        "start": ["voltar", "inscrever", "retomar"],
        "opted_out": "Sua inscrição foi cancelada e você não receberá mais mensagens nossas. "
        "Responda VOLTAR para se inscrever de novo.",
        "opted_in": "Você está inscrito de novo. Responda SAIR a qualquer momento para cancelar.",
    },
    "de": {
        "stop": ["stopp", "abmelden", "abbestellen"],
        "start": ["anmelden", "starten"],
        "opted_out": "Sie sind abgemeldet und erhalten keine Nachrichten mehr von uns. "
        "Antworten Sie ANMELDEN, um sich wieder anzumelden.",
        "opted_in": "Sie sind wieder angemeldet. Antworten Sie jederzeit STOPP, um sich abzumelden.",
    },
    "fr": {
        "stop": ["arret", "arrêt", "désabonner", "desabonner", "désinscription"],
        "start": ["reprendre", "abonner", "réabonner"],
        "opted_out": "Vous êtes désabonné et ne recevrez plus de messages de notre part. "
        "Répondez REPRENDRE pour vous réabonner.",
        "opted_in": "Vous êtes de nouveau abonné. Répondez ARRET à tout moment pour vous désabonner.",
    },
}

_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def normalize(text: str) -> str:
    """Casefolded, single-spaced, without punctuation or emoji around it."""
    return _EDGES.sub("", " ".join(text.casefold().split()))


@dataclass(frozen=True)
class Keyword:
    action: str  # opt_in or opt_out
    language: str
    confirmation: str


def keyword_table(config: Mapping[str, Any]) -> dict[str, Keyword]:
    """Normalized keyword -> what it does. Languages come in order, defaults
    first; a word listed by two languages keeps the first one's confirmation."""
    languages = {**DEFAULT_LANGUAGES, **config.get("languages", {})}
    table: dict[str, Keyword] = {}
    for code, words in languages.items():
        for action, key, reply in (("opt_out", "stop", "opted_out"), ("opt_in", "start", "opted_in")):
            for word in words[key]:
                table.setdefault(normalize(word), Keyword(action, code, words[reply]))
    return table


def consent_time(value: Any, *, now: float | None = None) -> float:
    """``value`` as unix seconds, if it is a finite number from 2009 to a day after ``now``.

    An event outside that range would sort before or after every real one and
    so decide the consent state for good; it is refused instead."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidTime("occurred_at must be a number of unix seconds")
    seconds = float(value)
    latest = (time.time() if now is None else now) + MAX_AHEAD
    if not math.isfinite(seconds) or not EARLIEST_TIME <= seconds <= latest:
        raise InvalidTime(
            f"occurred_at must be unix seconds from {EARLIEST_TIME:.0f} (2009-01-01) "
            f"to one day from now ({latest:.0f}), got {value!r}"
        )
    return seconds
