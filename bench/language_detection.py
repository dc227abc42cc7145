"""Language detection on short messages: py3langid against lingua-language-detector.

    python -m bench.language_detection [--rounds 5] [--install-missing] [--json out.json]

Both libraries ship their models inside their packages and run offline. Each
is restricted to the languages of the labelled set (``bench/data/short_texts.tsv``,
short WhatsApp-like messages) and to a smaller set (en, ru, pt), then asked
for the language of every text. Reported for each:

- accuracy of its best guess on every labelled text, with no threshold;
- with wahub's filter (``text_to_detect``: no links, at least 3 letters) and a
  confidence threshold: the share right, wrong, and without an answer, and how
  many of the texts in no language (``-`` in the set) still got one;
- the time per call, both measured in this run, interleaved round by round;
- the time to import and load the model and the memory it takes, each
  measured in a fresh process (``--probe``);
- the size installed on disk, with the dependencies wahub does not already need.

A library that is not installed is reported as such, unless ``--install-missing``
installs it with pip. This is a benchmark, not a test: it never fails on its
numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from wahub.core.conversations.language import MIN_CONFIDENCE, base_language, text_to_detect

DATA = Path(__file__).parent / "data" / "short_texts.tsv"
SMALL_SET = ("en", "ru", "pt")
THRESHOLDS = tuple(sorted({0.3, MIN_CONFIDENCE, 0.7}))
NO_LANGUAGE = "-"

#: A detector: text -> (ISO 639-1 code or None, confidence between 0 and 1).
Detect = Callable[[str], tuple[str | None, float]]


@dataclass(frozen=True)
class Sample:
    language: str | None  # None: a text in no language (digits, emoji, a link)
    text: str


@dataclass
class Library:
    name: str
    distribution: str
    build: Callable[[Iterable[str]], Detect]


@dataclass
class Scores:
    threshold: float
    right: float
    wrong: float
    no_answer: float
    answered_without_language: int


@dataclass
class Result:
    library: str
    languages: list[str]
    best_guess_accuracy: float
    scores: list[Scores] = field(default_factory=list)
    #: At wahub's threshold: "expected -> answered: text" for each text not answered right.
    misses: list[str] = field(default_factory=list)


def load_samples(path: Path = DATA) -> list[Sample]:
    """The labelled texts: ``language<TAB>text`` lines, ``#`` lines skipped."""
    samples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        label, text = line.split("\t", 1)
        samples.append(Sample(None if label == NO_LANGUAGE else base_language(label), text))
    return samples


def build_py3langid(languages: Iterable[str]) -> Detect:
    langid: Any = importlib.import_module("py3langid.langid")
    identifier = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)
    identifier.set_languages(sorted(languages))

    def detect(text: str) -> tuple[str | None, float]:
        label, probability = identifier.classify(text)
        return str(label), float(probability)

    return detect


def build_lingua(languages: Iterable[str]) -> Detect:
    lingua: Any = importlib.import_module("lingua")
    codes = [lingua.IsoCode639_1.from_str(code) for code in sorted(languages)]
    detector = lingua.LanguageDetectorBuilder.from_iso_codes_639_1(*codes).build()

    def detect(text: str) -> tuple[str | None, float]:
        values = detector.compute_language_confidence_values(text)
        if not values or values[0].value <= 0:
            return None, 0.0
        return str(values[0].language.iso_code_639_1.name).lower(), float(values[0].value)

    return detect


LIBRARIES = {
    "py3langid": Library("py3langid", "py3langid", build_py3langid),
    "lingua": Library("lingua", "lingua-language-detector", build_lingua),
}


def score(detect: Detect, samples: list[Sample], languages: list[str]) -> Result:
    """How ``detect`` does on the samples of ``languages`` and on those in no language."""
    labelled = [sample for sample in samples if sample.language in languages]
    noise = [sample for sample in samples if sample.language is None]
    guesses = {sample.text: detect(sample.text) for sample in labelled + noise}
    filtered = {text: detect(words) for text in guesses if (words := text_to_detect(text)) is not None}
    best = sum(guesses[sample.text][0] == sample.language for sample in labelled) / len(labelled)
    result = Result("", languages, best)
    for threshold in THRESHOLDS:

        def answer(text: str, threshold: float = threshold) -> str | None:
            code, confidence = filtered.get(text, (None, 0.0))
            return code if confidence >= threshold else None

        answers = [answer(sample.text) for sample in labelled]
        right = sum(code == sample.language for code, sample in zip(answers, labelled, strict=True))
        silent = answers.count(None)
        total = len(labelled)
        without = sum(answer(sample.text) is not None for sample in noise)
        if threshold == MIN_CONFIDENCE:
            result.misses = [
                f"{sample.language} -> {code or 'none'}: {sample.text}"
                for code, sample in zip(answers, labelled, strict=True)
                if code != sample.language
            ]
        result.scores.append(
            Scores(threshold, right / total, (total - right - silent) / total, silent / total, without)
        )
    return result


def time_per_call(detectors: dict[str, Detect], texts: list[str], rounds: int) -> dict[str, float]:
    """Microseconds per call of each detector over ``texts``, the median of ``rounds`` interleaved rounds."""
    runs: dict[str, list[float]] = {name: [] for name in detectors}
    for _ in range(rounds):
        for name, detect in detectors.items():
            started = time.perf_counter()
            for text in texts:
                detect(text)
            runs[name].append((time.perf_counter() - started) / len(texts) * 1e6)
    return {name: statistics.median(values) for name, values in runs.items()}


def resident_mb() -> float:
    """This process's resident memory now (Linux), else its peak so far."""
    status = Path("/proc/self/status")
    if status.exists():
        match = re.search(r"^VmRSS:\s+(\d+) kB", status.read_text(), re.MULTILINE)
        if match:
            return int(match.group(1)) / 1024
    # The peak is inherited across fork and exec on Linux, hence /proc first.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe(name: str, languages: list[str]) -> dict[str, float]:
    """In this (fresh) process: seconds to import, load and answer once, and the memory that added (MB)."""
    before = resident_mb()
    started = time.perf_counter()
    detect = LIBRARIES[name].build(languages)
    detect("what are your opening hours?")
    seconds = time.perf_counter() - started
    # Measured while the detector is alive: freed, its model would not count.
    return {"load_seconds": seconds, "memory_mb": resident_mb() - before}


def probe_in_fresh_process(name: str, languages: list[str]) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.language_detection", "--probe", name, "--languages", ",".join(languages)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300).stdout
    probed: dict[str, float] = json.loads(output)
    return probed


def _requirement_names(distribution: str, skip: str = "") -> set[str]:
    """The distributions ``distribution`` needs, all the way down (extras left out), not through ``skip``."""
    seen: set[str] = {_normal(skip)} if skip else set()
    pending = [distribution]
    while pending:
        name = pending.pop()
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if "extra ==" in requirement:
                continue
            match = re.match(r"[A-Za-z0-9._-]+", requirement)
            if match and (needed := _normal(match.group())) not in seen:
                seen.add(needed)
                pending.append(needed)
    return seen - {_normal(skip)}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_mb(distribution: str) -> float:
    files = metadata.distribution(distribution).files or []
    return sum(path.stat().st_size for file in files if (path := Path(str(file.locate()))).is_file()) / 1e6


def installed_size(distribution: str) -> dict[str, Any]:
    """MB on disk of ``distribution`` alone, and with the dependencies wahub does not already need."""
    # wahub's other requirements are installed anyway; what the library adds is the rest.
    already = _requirement_names("wahub", skip=distribution) | {"wahub"}
    extra = sorted(_requirement_names(distribution) - already)
    own = _installed_mb(distribution)
    return {"own_mb": own, "with_new_dependencies_mb": own + sum(map(_installed_mb, extra)), "new_dependencies": extra}


def installed(library: Library, install_missing: bool) -> bool:
    try:
        metadata.distribution(library.distribution)
        return True
    except metadata.PackageNotFoundError:
        if not install_missing:
            return False
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", library.distribution], check=True, timeout=600)
    importlib.invalidate_caches()
    return True


def report(results: list[Result], costs: dict[str, dict[str, Any]], missing: list[str]) -> str:
    lines = [
        "| library | languages | best guess | threshold | right | wrong | no answer | no-language texts answered |"
    ]
    lines.append("|---|---|---|---|---|---|---|---|")
    for result in results:
        for scores in result.scores:
            lines.append(
                f"| {result.library} | {len(result.languages)} ({','.join(result.languages)}) "
                f"| {result.best_guess_accuracy:.1%} | {scores.threshold} | {scores.right:.1%} | {scores.wrong:.1%} "
                f"| {scores.no_answer:.1%} | {scores.answered_without_language} |"
            )
    lines += ["", "| library | µs per call (8 languages) | vs fastest | load (s) | memory (MB) | installed (MB) |"]
    lines.append("|---|---|---|---|---|---|")
    fastest = min(cost["microseconds_per_call"] for cost in costs.values())
    for name, cost in costs.items():
        size = cost["size"]
        new = ", ".join(size["new_dependencies"]) or "none"
        lines.append(
            f"| {name} | {cost['microseconds_per_call']:.0f} | {cost['microseconds_per_call'] / fastest:.1f}x "
            f"| {cost['load_seconds']:.2f} | {cost['memory_mb']:.0f} "
            f"| {size['own_mb']:.1f} alone, {size['with_new_dependencies_mb']:.1f} with {new} |"
        )
    lines += [f"\n{name}: not installed (run with --install-missing to compare it)" for name in missing]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the timing, interleaved (default 5)")
    parser.add_argument("--install-missing", action="store_true", help="pip install a library that is missing")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--misses", action="store_true", help="list the texts each got wrong at wahub's threshold")
    parser.add_argument("--probe", choices=sorted(LIBRARIES), help=argparse.SUPPRESS)
    parser.add_argument("--languages", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe, args.languages.split(","))))
        return 0
    samples = load_samples()
    every = sorted({sample.language for sample in samples if sample.language})
    available = [library for library in LIBRARIES.values() if installed(library, args.install_missing)]
    missing = [library.name for library in LIBRARIES.values() if library not in available]
    results, detectors = [], {}
    for library in available:
        for languages in (every, sorted(SMALL_SET)):
            detect = library.build(languages)
            result = score(detect, samples, languages)
            result.library = library.name
            results.append(result)
        detectors[library.name] = library.build(every)
    texts = [sample.text for sample in samples]
    speed = time_per_call(detectors, texts, args.rounds)
    costs = {
        name: {
            "microseconds_per_call": speed[name],
            **probe_in_fresh_process(name, every),
            "size": installed_size(LIBRARIES[name].distribution),
        }
        for name in detectors
    }
    print(f"{len(samples)} texts, {len(every)} languages ({', '.join(every)}), {args.rounds} timing rounds\n")
    print(report(results, costs, missing))
    if args.misses:
        for result in results:
            print(f"\n{result.library}, {','.join(result.languages)}, threshold {MIN_CONFIDENCE}:")
            print("\n".join(f"  {miss}" for miss in result.misses) or "  none")
    if args.json:
        numbers = {"results": [asdict(result) for result in results], "costs": costs, "missing": missing}
        args.json.write_text(json.dumps(numbers, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
