"""Any OpenAI-compatible Chat Completions endpoint: OpenAI, Ollama, llama.cpp's
``llama-server``, LM Studio, vLLM. Configuration::

    ai:
      - platform: openai
        name: assistant
        base_url: https://api.openai.com/v1     # http://localhost:11434/v1 for Ollama...
        api_key: !secret openai_api_key          # optional
        model: gpt-4o-mini
        knowledge: faq                           # a faq backend: told to the model, answers when it fails
        system_prompt: "You are the assistant of ..."
        history_messages: 20
        timeout: 30                              # seconds for the whole turn, retries included
        max_tokens: 500
        temperature: 0.3
        daily_token_budget: 200000               # per UTC day, from the answers' usage
        redact: [phone, email]
        unavailable_reply: "Sorry, ..."          # or {en: ..., es: ...}
        handoff_reply: "A colleague ..."         # sent when the model hands off without a word
        max_tool_rounds: 3

A turn is one request (see ``chat_request``), then, while the model calls
plugin tools, their results sent back in a follow-up request. A call of
``handoff_to_human`` ends the turn with a hand-off. When the model fails
(time-out, errors after retries, a garbled tool call) or the day's budget is
spent, the knowledge FAQ answers if it has a match, else ``unavailable_reply``
is sent and a person asked for: the contact always hears something.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import voluptuous as vol

from wahub import hookimpl
from wahub.core.ai import AI_SCHEMA_BASE, HANDOFF_TOOL, AIAnswer, AIBackend, AIHost, AIRequest, AITool
from wahub.core.config.validators import ExplainedInvalid, int_between, localized_text, number_between
from wahub.core.conversations.language import localized
from wahub.core.errors import PluginError
from wahub.plugins.ai.budget import DailyBudget
from wahub.plugins.ai.chat_client import ChatClient, ModelFailed
from wahub.plugins.ai.chat_request import build_messages, offered_tools, tool_payload
from wahub.plugins.ai.faq import FaqBackend, turn_text
from wahub.plugins.ai.redact import KINDS, redact
from wahub.plugins.ai.tool_calls import BadToolCall, ToolCall, parse_tool_calls

__all__ = ["OpenAIBackend"]

_LOGGER = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_SYSTEM_PROMPT = (
    "You are the assistant of a business on WhatsApp. Answer the contact's messages briefly and kindly, "
    "in plain sentences (short lists are fine). Say only what you know from this conversation and from "
    "what the business tells you here; when you do not know, or the contact wants a person, call "
    "handoff_to_human."
)
#: What a contact is told when the model cannot answer and the FAQ has nothing, by language.
DEFAULT_UNAVAILABLE_REPLIES = {
    "en": "Sorry, I cannot answer right now. A colleague will get back to you here.",
    "es": "Lo siento, ahora no puedo responder. Un compañero le responderá por aquí.",
    "pt": "Desculpe, não consigo responder agora. Um colega vai responder você por aqui.",
    "ru": "Извините, сейчас я не могу ответить. Коллега ответит вам здесь.",
    "de": "Entschuldigung, ich kann gerade nicht antworten. Ein Kollege meldet sich hier bei Ihnen.",
    "fr": "Désolé, je ne peux pas répondre pour le moment. Un collègue vous répondra ici.",
}
DEFAULT_UNAVAILABLE_REPLY = DEFAULT_UNAVAILABLE_REPLIES["en"]
#: What a contact is told when the model hands the conversation to a person without a text of its own.
DEFAULT_HANDOFF_REPLIES = {
    "en": "I am passing you to a colleague, who will answer you here.",
    "es": "Le paso con un compañero, que le responderá por aquí.",
    "pt": "Vou passar você para um colega, que vai responder por aqui.",
    "ru": "Передаю вас коллеге, он ответит вам здесь.",
    "de": "Ich gebe Sie an einen Kollegen weiter, der Ihnen hier antwortet.",
    "fr": "Je vous passe à un collègue, qui vous répondra ici.",
}
#: Why a turn asks for a person when the model could not answer.
UNAVAILABLE_HANDOFF = "ai_unavailable"
#: Sent back to the model when a plugin's tool raised, so it can answer without it.
TOOL_FAILED = "The tool failed; answer without its result."


def _base_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ExplainedInvalid(
            "expected the endpoint's base URL, such as https://api.openai.com/v1 or http://localhost:11434/v1"
        )
    return value.rstrip("/")


def _redact_kinds(value: Any) -> list[str]:
    kinds = [value] if isinstance(value, str) else value
    if not isinstance(kinds, list) or any(kind not in KINDS for kind in kinds):
        raise ExplainedInvalid(f"expected a list of what to redact: {', '.join(KINDS)}")
    return list(dict.fromkeys(kinds))


class OpenAIBackend(AIBackend):
    """A model behind an OpenAI-compatible endpoint; see the module's docstring."""

    PLATFORM: ClassVar[str] = "openai"
    CONFIG_SCHEMA: ClassVar[vol.Schema] = AI_SCHEMA_BASE.extend(
        {
            vol.Optional("base_url", default=DEFAULT_BASE_URL): _base_url,
            vol.Optional("api_key"): vol.Any(None, str),
            vol.Required("model"): vol.All(str, vol.Length(min=1)),
            vol.Optional("system_prompt", default=DEFAULT_SYSTEM_PROMPT): vol.All(str, vol.Length(min=1)),
            vol.Optional("history_messages", default=20): int_between(0, 500),
            # A message's whole processing (its file, the plugins, the model) has 180 s, then it runs again.
            vol.Optional("timeout", default=30.0): number_between(1, 50, "seconds"),
            vol.Optional("max_tokens"): vol.Any(None, int_between(1, 1_000_000)),
            vol.Optional("temperature"): vol.Any(None, number_between(0, 2)),
            vol.Optional("knowledge"): vol.Any(None, str),
            vol.Optional("daily_token_budget"): vol.Any(None, int_between(1, 10**12)),
            vol.Optional("redact", default=list): _redact_kinds,
            vol.Optional("unavailable_reply", default=lambda: dict(DEFAULT_UNAVAILABLE_REPLIES)): localized_text(4096),
            vol.Optional("handoff_reply", default=lambda: dict(DEFAULT_HANDOFF_REPLIES)): localized_text(4096),
            vol.Optional("max_tool_rounds", default=3): int_between(0, 20),
        }
    )

    @classmethod
    def references(cls, entry: Mapping[str, Any], config: Mapping[str, Any]) -> Iterable[tuple[list[Any], str]]:
        name = entry.get("knowledge")
        faqs = sorted(other["name"] for other in config["ai"] if other["platform"] == FaqBackend.PLATFORM)
        if name is not None and name not in faqs:
            yield ["knowledge"], f"no faq entry of ai: is named {name!r} (faq entries: {', '.join(faqs) or 'none'})"

    def __init__(self, host: AIHost, config: Mapping[str, Any]) -> None:
        super().__init__(host, config)
        self.budget = DailyBudget(config.get("daily_token_budget"), host.clock)
        self.knowledge: FaqBackend | None = None

    async def start(self) -> None:
        """Find the ``knowledge`` FAQ among the configured backends."""
        name = self.config.get("knowledge")
        if name is None:
            return
        backend = self.host.ai.get(name)
        if not isinstance(backend, FaqBackend):
            faqs = ", ".join(sorted(n for n, b in self.host.ai.items() if isinstance(b, FaqBackend))) or "none"
            raise PluginError(
                f"AI backend {self.name!r}: knowledge {name!r} names no faq backend (the faq backends: {faqs})"
            )
        self.knowledge = backend

    def languages(self) -> set[str]:
        return self.knowledge.languages() if self.knowledge else set()

    def _text(self, key: str, default: Mapping[str, str], language: str) -> str:
        """The configured text ``key`` (else ``default``) in the contact's language."""
        return localized(self.config.get(key, default), language, self.host.config["wahub"]["language"])

    async def reply(self, request: AIRequest) -> AIAnswer:
        """The model's answer to the turn, or the fallback (see the module's docstring)."""
        if self.budget.exhausted():
            _LOGGER.warning("ai %s: today's token budget is spent", self.name)
            return self._fallback(request, "budget_spent", 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(self.config.get("timeout", 30.0))
        tools = offered_tools(request)
        knowledge = self.knowledge.knowledge(request.language) if self.knowledge else ()
        messages = build_messages(
            request,
            system_prompt=self.config.get("system_prompt", DEFAULT_SYSTEM_PROMPT),
            knowledge=knowledge,
            history_messages=int(self.config.get("history_messages", 20)),
            redact_kinds=self.config.get("redact", ()),
        )
        return await self._converse(request, messages, tools, deadline)

    async def _converse(
        self, request: AIRequest, messages: list[dict[str, Any]], tools: dict[str, AITool], deadline: float
    ) -> AIAnswer:
        """Ask the model, run the plugin tools it calls and ask again, until it answers."""
        client = ChatClient(self.host.http, self.config["base_url"], self.config.get("api_key"), self.name)
        tokens, called = 0, list[str]()
        max_rounds = int(self.config.get("max_tool_rounds", 3))
        for round_number in range(max_rounds + 1):
            if round_number and self.budget.exhausted():
                return self._fallback(request, "budget_spent", tokens)
            try:
                body = await client.complete(self._payload(messages, tools), deadline)
            except ModelFailed as exc:
                return self._fallback(request, exc.why, tokens)
            spent = _total_tokens(body)
            tokens += spent
            self.budget.spend(spent)
            message = body["choices"][0]["message"]
            content = message.get("content") if isinstance(message.get("content"), str) else None
            raw_calls = message.get("tool_calls") or []
            if not raw_calls:
                if not content or not content.strip():
                    return self._fallback(request, "empty_answer", tokens)
                return AIAnswer(text=content, tokens=tokens, details=self._details(round_number, called))
            try:
                calls = parse_tool_calls(raw_calls, tools)
            except BadToolCall as exc:
                _LOGGER.warning("ai %s: a tool call was refused (%s)", self.name, exc)
                return self._fallback(request, exc.why, tokens)
            called += [call.tool.name for call in calls]
            handoff = next((call for call in calls if call.tool.name == HANDOFF_TOOL), None)
            if handoff is not None:
                reason = str(handoff.arguments.get("reason") or "the model asked for a person")
                # Models call the tool with no content: the contact still hears that a person comes.
                said = content if content and content.strip() else None
                reply = said or self._text("handoff_reply", DEFAULT_HANDOFF_REPLIES, request.language)
                return AIAnswer(text=reply, handoff=reason, tokens=tokens, details=self._details(round_number, called))
            if round_number == max_rounds:
                break  # the model wants more tools than a turn may run
            messages.append(_assistant_turn(message))
            messages += await self._run_tools(request, calls, deadline)
        return self._fallback(request, "too_many_tool_rounds", tokens)

    def _payload(self, messages: list[dict[str, Any]], tools: Mapping[str, AITool]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.config["model"],
            "messages": messages,
            "tools": tool_payload(tools),
            "tool_choice": "auto",
        }
        for key in ("temperature", "max_tokens"):
            if self.config.get(key) is not None:
                payload[key] = self.config[key]
        return payload

    async def _run_tools(self, request: AIRequest, calls: list[ToolCall], deadline: float) -> list[dict[str, Any]]:
        """The ``tool`` messages answering ``calls``: each tool's result, or that
        it failed (or outlived the turn's time, which then ends at the next request)."""
        results = []
        for call in calls:
            if call.tool.run is None:
                result = f"The tool {call.tool.name} cannot be run here."
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        result = await call.tool.run(request, call.arguments)
                except TimeoutError:
                    _LOGGER.warning("ai %s: tool %s outlived the turn's time", self.name, call.tool.name)
                    result = TOOL_FAILED
                except Exception:
                    _LOGGER.exception("ai %s: tool %s failed", self.name, call.tool.name)
                    result = TOOL_FAILED
            content = redact(str(result), self.config.get("redact", ()))
            results.append({"role": "tool", "tool_call_id": call.id, "content": content})
        return results

    def _fallback(self, request: AIRequest, why: str, tokens: int) -> AIAnswer:
        """The knowledge FAQ's answer if it matches the turn, else the unavailable reply and a hand-off."""
        if self.knowledge is not None:
            found = self.knowledge.match(turn_text(request.messages), request.language)
            if found is not None:
                _LOGGER.info("ai %s: %s; the faq %s answers", self.name, why, self.knowledge.name)
                answer = self.knowledge.answer(found)
                return AIAnswer(
                    text=answer.text,
                    handoff=answer.handoff,
                    failed=why,
                    tokens=tokens,
                    answered_by=self.knowledge.name,
                    details=answer.details,
                )
        _LOGGER.warning("ai %s: %s; sending the unavailable reply and asking for a person", self.name, why)
        reply = self._text("unavailable_reply", DEFAULT_UNAVAILABLE_REPLIES, request.language)
        return AIAnswer(text=reply, handoff=UNAVAILABLE_HANDOFF, failed=why, tokens=tokens)

    def _details(self, rounds: int, called: list[str]) -> dict[str, Any]:
        return {"model": self.config["model"], "tool_rounds": rounds, "tools_called": called}


def _assistant_turn(message: Mapping[str, Any]) -> dict[str, Any]:
    """The model's message as the follow-up request repeats it: its content and tool calls."""
    return {"role": "assistant", "content": message.get("content"), "tool_calls": message.get("tool_calls")}


def _total_tokens(body: Mapping[str, Any]) -> int:
    usage = body.get("usage")
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return total if isinstance(total, int) and not isinstance(total, bool) else 0


@hookimpl
def register_ai_backends() -> Iterable[type[AIBackend]]:
    return [OpenAIBackend]
