"""Languages of contacts: codes, fallback chains, localized texts, and detection.

A contact's language is the one set for it (the REST API), else the one
detected from what it writes, else ``wahub.language``. Every text the bot
sends may have a form per language (``localized_text`` in the configuration);
``localized`` picks the form by the contact's fallback chain, so a reply never
goes silent for want of a translation.

Detection uses py3langid, whose model ships inside its package: it works with
no network. ``docs/languages.md`` shows how it compared on short messages.
"""

from __future__ import annotations

import array
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

from wahub.core.config.validators import canonical_language, shorter_forms

__all__ = [
    "MIN_CONFIDENCE",
    "MIN_LETTERS",
    "LanguageDetector",
    "base_language",
    "fallback_chain",
    "localized",
    "text_to_detect",
]

_LOGGER = logging.getLogger(__name__)

#: Fewer letters than this (``ok``, ``k``) say nothing about a language.
MIN_LETTERS: Final = 3
#: The least probability (among the configured languages) a detection needs.
#: Below it a guess on a short text is wrong about as often as it is right
#: (``bench/language_detection.py``), and no answer keeps the contact's
#: language as it was.
MIN_CONFIDENCE: Final = 0.5

# Links and addresses are in no language; their letters would still vote.
_LINK = re.compile(r"(?:https?://|www\.)\S+|\S+@\S+\.\S+", re.IGNORECASE)


def _canonical(code: str) -> str:
    canonical = canonical_language(code)
    if canonical is None:
        raise ValueError(f"{code!r} is not a language code: expected one such as en or pt-BR")
    return canonical


def base_language(code: str) -> str:
    """The language subtag of ``code``, lower case: ``pt-BR`` -> ``pt``, ``zh-Hant-TW`` -> ``zh``.

    Raises ``ValueError`` when ``code`` is not a language code.
    """
    return _canonical(code).split("-", 1)[0]


def fallback_chain(language: str | None, default: str) -> list[str]:
    """The languages to try, best first: ``language``, its shorter forms, ``default``, its shorter forms.

    ``fallback_chain("pt-BR", "en-GB")`` is ``["pt-BR", "pt", "en-GB", "en"]``;
    ``zh-Hant-TW`` gives ``zh-Hant-TW, zh-Hant, zh``. Codes are canonical and
    appear once. A ``language`` that is None or not a language code is left
    out (the chain then starts at the default); a bad ``default`` raises
    ``ValueError``, as configuration validation should have refused it.
    """
    chain = shorter_forms(_canonical(default))
    contact = canonical_language(language) if language else None
    if language and contact is None:
        _LOGGER.warning("Ignoring the contact language %r: it is not a language code", language)
    if contact is not None:
        chain = shorter_forms(contact) + chain
    return list(dict.fromkeys(chain))


def localized(value: str | Mapping[str, str], language: str | None, default: str) -> str:
    """The form of ``value`` for a contact speaking ``language``.

    A plain text is itself. A mapping ``{code: text}`` gives the text of the
    first code of ``fallback_chain(language, default)`` it has (keys are
    compared in canonical form), else its first entry, so a reply never goes
    silent. An empty mapping raises ``ValueError``.
    """
    if isinstance(value, str):
        return value
    if not value:
        raise ValueError("a localized text needs at least one language")
    by_code = {canonical_language(code) or code: text for code, text in value.items()}
    for code in fallback_chain(language, default):
        if code in by_code:
            return by_code[code]
    return next(iter(value.values()))


def text_to_detect(text: str) -> str | None:
    """``text`` without its links and addresses, or None when what is left has too few letters to tell.

    ``ok``, ``👍``, ``12345`` and a bare link give None: they are in no language.
    """
    words = _LINK.sub(" ", text)
    if sum(1 for char in words if char.isalpha()) < MIN_LETTERS:
        return None
    return words


class LanguageDetector:
    """Tells which of the configured languages a short message is written in.

    The model (py3langid's, inside its package, so no network is needed) is
    read once, on the first ``detect``: about 0.5 s of CPU and 65 MB of
    memory, numpy included (its tokenizer takes 40 MB; of the weights only the
    configured languages' are kept). After that a call costs about 30 microseconds of
    CPU for a WhatsApp-length message and does no I/O, so it may run on the
    event loop (numbers of ``python -m bench.language_detection`` on a 2-core
    machine). With fewer than two base languages configured it is never read.
    Instances are safe to share between threads.
    """

    def __init__(self, languages: Iterable[str], *, min_confidence: float = MIN_CONFIDENCE) -> None:
        """Detect among ``languages`` (codes; canonicalised, each kept once).

        Raises ``ValueError`` for a code that is not a language code.
        """
        self.languages: tuple[str, ...] = tuple(dict.fromkeys(_canonical(code) for code in languages))
        self.min_confidence = min_confidence
        self._by_base: dict[str, str] = {}
        for code in self.languages:
            self._by_base.setdefault(base_language(code), code)  # the first code of a base answers for it
        # py3langid's LanguageIdentifier (untyped), once read; None until then or when it cannot choose.
        self._identifier: Any = None
        self._model_read = False
        self._candidates: dict[str, str] = {}
        self._load_lock = threading.Lock()

    def detect(self, text: str, *, min_confidence: float | None = None) -> str | None:
        """The configured code of the language ``text`` is written in, or None.

        Matching is on the base language: with ``pt-BR`` configured, Portuguese
        text gives ``pt-BR``. None when the text has fewer than ``MIN_LETTERS``
        letters once links are removed (``ok``, an emoji, ``12345``), when fewer
        than two configured languages are known to the model (there is nothing
        to choose between), or when the model's probability is below
        ``min_confidence`` (the detector's own unless given).
        """
        words = text_to_detect(text)
        if words is None:
            return None
        identifier = self._loaded()
        if identifier is None:
            return None
        label, probability = identifier.classify(words)
        if probability < (self.min_confidence if min_confidence is None else min_confidence):
            return None
        return self._candidates.get(str(label))

    def _loaded(self) -> Any:
        """The model restricted to the configured languages, read on the first call; None if it cannot choose."""
        with self._load_lock:
            if not self._model_read:
                self._identifier = self._load()
                self._model_read = True
            return self._identifier

    def _load(self) -> Any:
        if len(self._by_base) < 2:  # one language: nothing to choose, and the model is not read
            _LOGGER.info("Language detection is off: it needs two languages, has %s", sorted(self._by_base))
            return None
        with _ModelArchive() as archive:
            known = set(archive.labels())
            self._candidates = {base: code for base, code in self._by_base.items() if base in known}
            unknown = [code for code in self.languages if base_language(code) not in known]
            if unknown:
                _LOGGER.warning("Language detection does not know %s: messages in them are not detected", unknown)
            if len(self._candidates) < 2:
                _LOGGER.info(
                    "Language detection is off: it needs two languages it knows, has %s", sorted(self._candidates)
                )
                return None
            return archive.identifier(set(self._candidates))


class _ModelArchive:
    """py3langid's model file (an npz inside LZMA), read one array at a time, so
    that reading it never holds more than what is kept: of the weights
    (142 languages, 28 MB) the chosen languages' columns only, and the
    tokenizer's 40 MB table read straight into the array it is used as. A model
    laid out otherwise is read by py3langid itself, then restricted."""

    def __enter__(self) -> _ModelArchive:
        import lzma
        import shutil
        import tempfile
        import zipfile

        from py3langid.langid import MODEL_DIR, MODEL_FILE  # imported here: numpy loads only if used

        self._file = tempfile.TemporaryFile(suffix=".npz")
        with lzma.open(MODEL_DIR / MODEL_FILE) as packed:
            shutil.copyfileobj(packed, self._file, length=1 << 20)
        self._zip = zipfile.ZipFile(self._file)
        self._names = set(self._zip.namelist())
        self._classes: list[str] | None = None
        if self._names == _MODEL_MEMBERS:
            self._classes = [str(label) for label in self._whole("classes")]
        return self

    def __exit__(self, *_exc: object) -> None:
        self._zip.close()
        self._file.close()

    def labels(self) -> list[str]:
        return list(dict.fromkeys(self._classes)) if self._classes is not None else _read_model().labels

    def identifier(self, labels: set[str]) -> Any:
        """The model with the weights of ``labels`` only, probabilities normalised."""
        if self._classes is not None:
            try:
                return self._read_restricted(labels)
            except ValueError as exc:
                _LOGGER.info("reading the language model by py3langid (%s)", exc)
        return _restricted(_read_model(), labels)

    def _read_restricted(self, labels: set[str]) -> Any:
        assert self._classes is not None
        import numpy as np
        from py3langid.langid import LanguageIdentifier

        columns = [index for index, label in enumerate(self._classes) if label in labels]
        with self._member("ptc") as (stream, shape, dtype):
            weights = np.empty((shape[0], len(columns)), dtype=dtype)
            step = 4096
            for start in range(0, shape[0], step):
                rows = min(step, shape[0] - start)
                chunk = np.frombuffer(stream.read(rows * shape[1] * dtype.itemsize), dtype=dtype)
                weights[start : start + rows] = chunk.reshape(rows, shape[1])[:, columns]
        priors = self._whole("pc")[columns]
        return LanguageIdentifier(
            weights,
            priors,
            [self._classes[index] for index in columns],
            self._table("nextmove"),
            self._whole("out_feat").tolist(),
            norm_probs=True,
            tk_row=self._table("nextmove_row"),
        )

    def _member(self, name: str) -> Any:
        import contextlib

        import numpy as np

        @contextlib.contextmanager
        def opened() -> Any:
            with self._zip.open(f"{name}.npy") as stream:
                version = np.lib.format.read_magic(stream)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, fortran_order, dtype = read_header(stream)
                if fortran_order:
                    raise ValueError(f"the model's {name} is stored column by column")
                yield stream, shape, dtype

        return opened()

    def _whole(self, name: str) -> Any:
        import numpy as np

        with self._member(name) as (stream, shape, dtype):
            count = int(np.prod(shape))
            return np.frombuffer(stream.read(count * dtype.itemsize), dtype=dtype, count=count).reshape(shape)

    def _table(self, name: str) -> array.array[int]:
        """An unsigned integer array read straight into a stdlib array (what the tokenizer indexes)."""
        with self._member(name) as (stream, shape, dtype):
            if dtype.kind != "u" or not dtype.isnative or dtype.itemsize not in _TYPECODES or len(shape) != 1:
                raise ValueError(f"the model's {name} is a {dtype} table of shape {shape}")
            table = array.array(_TYPECODES[dtype.itemsize], [0]) * int(shape[0])
            view = memoryview(table).cast("B")
            filled = 0
            while filled < len(view):
                got = stream.readinto(view[filled : filled + (1 << 20)])
                if not got:
                    raise ValueError(f"the model's {name} ends early")
                filled += got
            return table


#: The arrays of py3langid's model file, and the stdlib array types of its tables by item size.
_MODEL_MEMBERS = {f"{name}.npy" for name in ("ptc", "pc", "classes", "nextmove", "nextmove_row", "out_feat")}
_TYPECODES = {2: "H", 4: "I", 8: "L"}


def _read_model() -> Any:
    """py3langid's model, read from its package (a few MB, compressed), with probabilities normalised."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # imported here: numpy loads only if used

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _restricted(model: Any, labels: set[str]) -> Any:
    """The model with the weights of ``labels`` only. It classifies as the
    whole model does after ``set_languages(labels)``, without keeping the
    weights of every other language (about 28 MB) for a later reset."""
    columns = [index for index, label in enumerate(model.nb_classes) if label in labels]
    return type(model)(
        model.nb_ptc[:, columns],
        model.nb_pc[columns],
        [model.nb_classes[index] for index in columns],
        model.tk_nextmove,
        model.tk_output,
        norm_probs=True,
        tk_row=model.tk_row,
    )
