"""The `demo` stage: synthesise a tiny "endangered-language" corpus and its source-language corpus with espeak-ng.

Each language gets a seeded pseudo-lexicon (words built from syllables written in that language's own alphabet, so
espeak reads them natively instead of switching to English letter names). Sentences draw words with a Zipf-like
distribution, so words repeat across speakers and WER and n-gram LMs mean something. A speaker is an espeak voice
variant plus a fixed pitch, pitch range and rate. Transcripts are espeak's IPA of each sentence, cleaned.

Both corpora use the Hugging Face audiofolder layout: `metadata.csv` (file_name, transcription, speaker_id, and
`language` in the source corpus) beside `wav/<speaker>/<speaker>_<nnnn>.wav`, 16-bit mono at espeak's 22050 Hz.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import functools
import itertools
import logging
import multiprocessing
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import espeakng_loader
import numpy as np
import soundfile as sf
from tqdm import tqdm

from asrflow import config
from asrflow.io import atomic_path

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050  # espeak-ng's native rate; `resample` converts to 16 kHz later
LEXICON_SIZE = 200
SENTENCE_WORDS = (3, 8)  # inclusive range of words per sentence
SHARED_FRACTION = 0.1  # share of each speaker's sentences that every speaker of the corpus reads
SYLLABLES_PER_WORD = {1: 0.05, 2: 0.3, 3: 0.45, 4: 0.2}
RATE_WPM = (115, 160)
PITCH = (30, 70)  # espeakPITCH 0..100, relative to the variant's own base pitch
PITCH_RANGE = (35, 75)  # espeakRANGE 0..100
VOLUME = 70  # espeakVOLUME 0..200; espeak's default 100 clips a few loud variants
MIN_SECONDS = 0.3
FULL_SCALE = 32767

# Voice variants checked to give byte-identical audio from run to run. Those with `breath` (f2, f3, f5) mix in noise
# that differs between runs; the klatt variants use another synthesiser; both are left out.
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8")
FEMALE_VARIANTS = ("f1", "f4", "belinda", "linda", "aunty", "steph", "Annie")


@dataclass(frozen=True)
class Phonotactics:
    """How a pseudo-word's syllables are spelt: (onset) vowel (coda), letters of the language's own alphabet."""

    onsets: tuple[str, ...]
    vowels: tuple[str, ...]
    codas: tuple[str, ...] = ()
    coda_probability: float = 0.0
    vowel_initial_probability: float = 0.15


PHONOTACTICS: dict[str, Phonotactics] = {
    # Swahili: open syllables, prenasalised stops, digraphs ch/sh/ny.
    "sw": Phonotactics(
        onsets=(
            "b",
            "ch",
            "d",
            "f",
            "g",
            "h",
            "j",
            "k",
            "l",
            "m",
            "n",
            "ny",
            "p",
            "r",
            "s",
            "sh",
            "t",
            "v",
            "w",
            "y",
            "z",
            "mb",
            "nd",
            "ng",
            "nj",
            "nz",
        ),
        vowels=("a", "e", "i", "o", "u"),
    ),
    # Finnish: ä ö y, long vowels written double, diphthongs, codas n s t l r.
    "fi": Phonotactics(
        onsets=("h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v"),
        vowels=("a", "e", "i", "o", "u", "y", "ä", "ö", "aa", "ee", "ii", "uu", "ää", "ai", "ei", "uo", "ie", "yö"),
        codas=("n", "s", "t", "l", "r"),
        coda_probability=0.3,
    ),
    # Indonesian: CV and CVC, digraphs ng/ny.
    "id": Phonotactics(
        onsets=("b", "c", "d", "g", "h", "j", "k", "l", "m", "n", "ny", "p", "r", "s", "t", "w", "y"),
        vowels=("a", "e", "i", "o", "u"),
        codas=("n", "ng", "r", "s", "t", "k", "l", "m", "h"),
        coda_probability=0.3,
    ),
    # Estonian: õ ä ö ü, long vowels written double.
    "et": Phonotactics(
        onsets=("h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v"),
        vowels=("a", "e", "i", "o", "u", "õ", "ä", "ö", "ü", "aa", "ee", "ii", "uu", "ai", "ei"),
        codas=("n", "s", "t", "l", "r", "k"),
        coda_probability=0.3,
    ),
}
# Letters that most Latin-script languages read natively; words espeak still switches on are dropped.
GENERIC_PHONOTACTICS = Phonotactics(
    onsets=("p", "t", "k", "m", "n", "l", "s"), vowels=("a", "e", "i", "o", "u"), codas=("n",), coda_probability=0.15
)


@dataclass(frozen=True)
class Speaker:
    speaker_id: str
    language: str
    variant: str
    rate: int
    pitch: int
    pitch_range: int

    @property
    def voice(self) -> str:
        return f"{self.language}+{self.variant}"


@dataclass(frozen=True)
class Sentence:
    text: str  # what espeak reads
    transcription: str  # cleaned IPA, one token per written word


@dataclass(frozen=True)
class Utterance:
    file_name: str
    speaker: Speaker
    sentence: Sentence


# ---------------------------------------------------------------------------------------------------------------------
# espeak-ng through ctypes


class Espeak:
    """The process's espeak-ng library, initialised once (espeak keeps its state in C globals)."""

    AUDIO_OUTPUT_SYNCHRONOUS = 2
    INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() when the data is missing
    CHARS_UTF8 = 1
    POS_CHARACTER = 1
    PHONEMES_IPA = 0x02
    RATE, VOLUME, PITCH, RANGE = 1, 2, 3, 4
    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [self._CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        rate = lib.espeak_Initialize(
            self.AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), self.INITIALIZE_DONT_EXIT
        )
        if rate != SAMPLE_RATE:
            raise RuntimeError(f"espeak-ng failed to initialise (returned {rate}); is espeakng-loader installed?")
        self._lib = lib
        self._chunks: list[np.ndarray] = []
        # espeak calls this pointer from C: it must stay referenced as long as the library may call it.
        self._callback = self._CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples: Any, count: int, _events: Any) -> int:
        if samples and count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0 = continue synthesis

    def set_voice(self, voice: str) -> None:
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r} (language+variant)")

    def phonemes(self, text: str) -> str:
        """espeak's IPA for `text` in the current voice's language, clause by clause."""
        buffer = text.encode()
        pointer = ctypes.c_char_p(buffer)
        clauses = []
        while pointer.value:  # espeak advances the pointer one clause per call and sets it to NULL at the end
            clauses.append(
                self._lib.espeak_TextToPhonemes(ctypes.byref(pointer), self.CHARS_UTF8, self.PHONEMES_IPA).decode()
            )
        return " ".join(clauses)

    def synthesise(self, speaker: Speaker, text: str) -> np.ndarray:
        """int16 samples at SAMPLE_RATE of `text` spoken by `speaker`."""
        self.set_voice(speaker.voice)
        # Parameters are library-global like the voice: set all of them for every utterance.
        for parameter, value in (
            (self.RATE, speaker.rate),
            (self.VOLUME, VOLUME),
            (self.PITCH, speaker.pitch),
            (self.RANGE, speaker.pitch_range),
        ):
            self._lib.espeak_SetParameter(parameter, value, 0)
        self._chunks = []
        data = text.encode()
        error = self._lib.espeak_Synth(data, len(data) + 1, 0, self.POS_CHARACTER, 0, self.CHARS_UTF8, None, None)
        if error != 0:
            raise RuntimeError(f"espeak_Synth failed ({error}) on {text!r} with voice {speaker.voice}")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)


@functools.cache
def espeak() -> Espeak:
    return Espeak()


# ---------------------------------------------------------------------------------------------------------------------
# Transcripts and text


_SWITCH_TAG = re.compile(r"\([^()]*\)")  # espeak's language switches: (en) … (sw)
_STRAY = str.maketrans("", "", '"[]\u200c\u200d')
_STRESS = str.maketrans("", "", "ˈˌ")


def clean_ipa(raw: str, keep_stress: bool) -> str:
    """espeak IPA without language-switch tags, zero-width joiners, stray quotes/brackets and (optionally) stress."""
    # espeak leaves its own palatalisation mark `^` (Estonian t^, s^) unconverted: write it as IPA ʲ.
    text = _SWITCH_TAG.sub("", raw).translate(_STRAY).replace("^", "ʲ")
    if not keep_stress:
        text = text.translate(_STRESS)
    return " ".join(text.split())


def seeded(seed: int, *purpose: str) -> random.Random:
    # A string seed is hashed with SHA-512, so the stream is stable across processes (unlike hash()).
    return random.Random("/".join([str(seed), *purpose]))


def pseudo_word(rules: Phonotactics, rng: random.Random) -> tuple[str, int]:
    """A pseudo-word and its number of syllables."""
    n_syllables = rng.choices(list(SYLLABLES_PER_WORD), weights=list(SYLLABLES_PER_WORD.values()))[0]
    parts = []
    for index in range(n_syllables):
        vowel_initial = index == 0 and rng.random() < rules.vowel_initial_probability
        onset = "" if vowel_initial else rng.choice(rules.onsets)
        coda = rng.choice(rules.codas) if rules.codas and rng.random() < rules.coda_probability else ""
        parts.append(onset + rng.choice(rules.vowels) + coda)
    return "".join(parts), n_syllables


def make_lexicon(language: str, seed: int) -> list[str]:
    """LEXICON_SIZE pseudo-words of `language` in Zipf rank order (short words first, as in real languages).

    A word is kept only if espeak reads it natively (no switch to another language) as one word whose IPA no other
    word has, so transcript tokens stay distinct words.
    """
    rules = PHONOTACTICS.get(language, GENERIC_PHONOTACTICS)
    rng = seeded(seed, "lexicon", language)
    engine = espeak()
    try:
        engine.set_voice(language)
    except ValueError:
        raise config.ParamsError(f"corpus.demo: espeak-ng has no language {language!r}") from None
    kept: list[tuple[int, str]] = []
    seen_spellings: set[str] = set()
    seen_ipa: set[str] = set()
    for _attempt in range(LEXICON_SIZE * 20):
        spelling, n_syllables = pseudo_word(rules, rng)
        if spelling in seen_spellings:
            continue
        seen_spellings.add(spelling)
        raw = engine.phonemes(spelling)
        ipa = clean_ipa(raw, keep_stress=False)
        if "(" in raw or not ipa or " " in ipa or ipa in seen_ipa:
            continue
        seen_ipa.add(ipa)
        kept.append((n_syllables, spelling))
        if len(kept) == LEXICON_SIZE:
            kept.sort(key=lambda item: item[0])  # stable: ties keep their seeded order
            return [spelling for _, spelling in kept]
    raise config.ParamsError(
        f"corpus.demo: espeak-ng reads too few pseudo-words natively in language {language!r} "
        f"({len(kept)} of {LEXICON_SIZE}); add its alphabet to PHONOTACTICS in {__name__}"
    )


def zipf_weights(size: int) -> list[float]:
    # Zipf–Mandelbrot with offset 1: the commonest word is roughly 8 % of all tokens.
    return [1.0 / (rank + 1) for rank in range(1, size + 1)]


class SentenceDrawer:
    """Draws sentences of one language that never repeat, each with espeak's IPA transcription.

    The whole sentence is phonemised, not word by word, so cross-word assimilation (Finnish n → ŋ before k) matches
    what espeak says; a sentence whose IPA does not come out as one token per written word is redrawn.
    """

    def __init__(self, language: str, seed: int, keep_stress: bool, purpose: str) -> None:
        self.language = language
        self.lexicon = make_lexicon(language, seed)
        self.weights = zipf_weights(len(self.lexicon))
        self.keep_stress = keep_stress
        self.rng = seeded(seed, "sentences", purpose, language)
        self.seen: set[str] = set()

    def draw(self, count: int) -> list[Sentence]:
        engine = espeak()
        engine.set_voice(self.language)
        sentences: list[Sentence] = []
        attempts = 0
        while len(sentences) < count:
            attempts += 1
            if attempts > 100 * count:  # espeak keeps merging or splitting words: fail instead of looping forever
                raise config.ParamsError(f"corpus.demo: espeak-ng does not keep word boundaries in {self.language!r}")
            words = self.rng.choices(self.lexicon, weights=self.weights, k=self.rng.randint(*SENTENCE_WORDS))
            # The full stop gives espeak's sentence-final intonation; it never reaches the transcript.
            text = " ".join(words) + "."
            transcription = clean_ipa(engine.phonemes(text), self.keep_stress)
            if text not in self.seen and len(transcription.split()) == len(words):
                self.seen.add(text)
                sentences.append(Sentence(text, transcription))
        return sentences


# ---------------------------------------------------------------------------------------------------------------------
# Corpus plan: speakers, sentences, file names


def make_speakers(language: str, count: int, seed: int, corpus: str, id_format: str) -> list[Speaker]:
    """`count` speakers alternating male and female variants, each with its own pitch, range and rate."""
    rng = seeded(seed, "speakers", corpus, language)
    males = rng.sample(MALE_VARIANTS, len(MALE_VARIANTS))
    females = rng.sample(FEMALE_VARIANTS, len(FEMALE_VARIANTS))
    variants = [v for pair in itertools.zip_longest(males, females) for v in pair if v is not None]
    return [
        Speaker(
            speaker_id=id_format.format(language=language, number=number),
            language=language,
            variant=variants[(number - 1) % len(variants)],
            rate=rng.randint(*RATE_WPM),
            pitch=rng.randint(*PITCH),
            pitch_range=rng.randint(*PITCH_RANGE),
        )
        for number in range(1, count + 1)
    ]


def shared_count(per_speaker: int) -> int:
    return min(per_speaker - 1, max(1, round(SHARED_FRACTION * per_speaker)))


def plan_corpus(speakers: Sequence[Speaker], drawer: SentenceDrawer, per_speaker: int) -> list[Utterance]:
    """Each speaker reads a few sentences every speaker reads, and otherwise sentences of their own."""
    shared = drawer.draw(shared_count(per_speaker))
    utterances = []
    for speaker in speakers:
        sentences = shared + drawer.draw(per_speaker - len(shared))
        drawer.rng.shuffle(sentences)
        for number, sentence in enumerate(sentences, start=1):
            name = f"{speaker.speaker_id}_{number:04d}.wav"
            utterances.append(Utterance(f"wav/{speaker.speaker_id}/{name}", speaker, sentence))
    return utterances


def plan_target(cfg: dict[str, Any]) -> list[Utterance]:
    language, seed = cfg["language"], cfg["seed"]
    speakers = make_speakers(language, cfg["speakers"], seed, "target", "spk{number:02d}")
    drawer = SentenceDrawer(language, seed, cfg["keep_stress"], "target")
    return plan_corpus(speakers, drawer, cfg["utterances_per_speaker"])


def plan_source(cfg: dict[str, Any]) -> list[Utterance]:
    seed, utterances = cfg["seed"], []
    for language in cfg["source_languages"]:
        speakers = make_speakers(language, cfg["source_speakers"], seed, "source", "{language}_spk{number}")
        drawer = SentenceDrawer(language, seed, cfg["keep_stress"], "source")
        utterances += plan_corpus(speakers, drawer, cfg["source_utterances_per_speaker"])
    return utterances


# ---------------------------------------------------------------------------------------------------------------------
# Synthesis


@dataclass(frozen=True)
class SpeakerJob:
    root: Path
    speaker: Speaker
    items: tuple[tuple[str, str], ...]  # (file_name, text)


def synthesise_speaker(job: SpeakerJob) -> dict[Path, float]:
    """Write one speaker's wav files; return each file's duration in seconds.

    Runs in a fresh process: espeak's wave generator keeps state (pitch-flutter phase and more) in C statics that
    only reset when the library is loaded, so audio is reproducible only if each speaker starts from a fresh library.
    """
    engine = espeak()
    durations = {}
    for file_name, text in job.items:
        samples = engine.synthesise(job.speaker, text)
        check_audio(samples, f"{job.speaker.speaker_id} {file_name}")
        path = job.root / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
        durations[path] = len(samples) / SAMPLE_RATE
    return durations


def check_audio(samples: np.ndarray, where: str) -> None:
    if len(samples) < MIN_SECONDS * SAMPLE_RATE:
        raise RuntimeError(f"{where}: espeak-ng produced only {len(samples)} samples")
    if np.abs(samples.astype(np.int32)).max() >= FULL_SCALE:
        raise RuntimeError(f"{where}: espeak-ng output is clipped")


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def synthesise_all(jobs: Sequence[SpeakerJob], progress: tqdm) -> dict[Path, float]:
    """Synthesise every job in its own fresh process (see synthesise_speaker), in parallel."""
    context = multiprocessing.get_context("spawn")
    durations: dict[Path, float] = {}
    with context.Pool(min(len(jobs), available_cores()), maxtasksperchild=1) as pool:
        for result in pool.imap_unordered(synthesise_speaker, jobs):
            durations.update(result)
            progress.update(len(result))
    return durations


def speaker_jobs(root: Path, utterances: Sequence[Utterance]) -> list[SpeakerJob]:
    by_speaker: dict[Speaker, list[tuple[str, str]]] = {}
    for utt in utterances:
        by_speaker.setdefault(utt.speaker, []).append((utt.file_name, utt.sentence.text))
    return [SpeakerJob(root, speaker, tuple(items)) for speaker, items in by_speaker.items()]


def write_metadata(root: Path, utterances: Sequence[Utterance], with_language: bool) -> None:
    with (root / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file_name", "transcription", "speaker_id", *(["language"] if with_language else [])])
        for utt in utterances:
            language = [utt.speaker.language] if with_language else []
            writer.writerow([utt.file_name, utt.sentence.transcription, utt.speaker.speaker_id, *language])


def summary(name: str, root: Path, utterances: Sequence[Utterance], durations: dict[Path, float]) -> str:
    speakers = {u.speaker.speaker_id for u in utterances}
    languages = ",".join(dict.fromkeys(u.speaker.language for u in utterances))
    minutes = sum(durations[root / u.file_name] for u in utterances) / 60
    return f"{name} ({languages}): {len(speakers)} speakers, {len(utterances)} utterances, {minutes:.1f} min"


def synthesise_demo(cfg: dict[str, Any], target_dir: Path, source_dir: Path) -> None:
    """Write the target corpus to `target_dir` and the source-language corpus to `source_dir`, both atomically."""
    target, source = plan_target(cfg), plan_source(cfg)
    with atomic_path(target_dir) as target_tmp, atomic_path(source_dir) as source_tmp:
        jobs = speaker_jobs(target_tmp, target) + speaker_jobs(source_tmp, source)
        with tqdm(total=len(target) + len(source), unit="utt", desc="espeak-ng") as progress:
            durations = synthesise_all(jobs, progress)
        write_metadata(target_tmp, target, with_language=False)
        write_metadata(source_tmp, source, with_language=True)
        log.info(
            "demo corpus: %s; %s",
            summary("target", target_tmp, target, durations),
            summary("source", source_tmp, source, durations),
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`asrflow demo`'s own arguments (cli.py adds --params, --log and --threads)."""
    parser.add_argument("--target", required=True, type=Path)
    parser.add_argument("--source", required=True, type=Path)


def run_cli(args: argparse.Namespace) -> None:
    cfg = config.load_stage(args.params, "demo")["corpus"]["demo"]
    synthesise_demo(cfg, args.target, args.source)
