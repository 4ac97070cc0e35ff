"""`mmdistill predict` end to end: a tiny trained model, real PNG/WAV files, eager and ONNX, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mmdistill.cli.main import main
from mmdistill.config.schema import Config
from mmdistill.data.collate import collate
from mmdistill.data.records import RawSample
from mmdistill.data.transforms.text import TextTokenizer
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.checkpoint import save_model
from mmdistill.recipes.data import TOKENIZER_FILE, DataBundle, preprocessor_from_config
from mmdistill.recipes.train import checkpoint_extra

RATE = 8000  # the model's rate; the test WAV is written at another one to exercise resampling
CLASSES = ["bright", "dark"]


def _record(label: int, i: int) -> RawSample:
    rng = np.random.default_rng(10 * label + i)
    level = 220 if label == 0 else 30
    img = np.clip(level + rng.integers(-20, 20, (16, 16)), 0, 255).astype(np.uint8)
    t = np.arange(int(0.3 * RATE)) / RATE
    wave = (0.4 * np.sin(2 * np.pi * (1500.0 if label == 0 else 250.0) * t)).astype(np.float32)
    return RawSample(id=f"{label}-{i}", label=label, split="train", image=img,
                     text=f"a {CLASSES[label]} picture number {i}", audio=wave, sample_rate=RATE)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a trained tiny student, its tokenizer, an ONNX export and an image+text model."""
    root = tmp_path_factory.mktemp("run")
    cfg = Config.model_validate({"data": {
        "image": {"size": 12}, "text": {"vocab_size": 40, "max_length": 8},
        "audio": {"sample_rate": RATE, "n_fft": 200, "hop_length": 80, "n_mels": 12, "max_seconds": 0.5},
    }})
    records = [_record(label, i) for label in (0, 1) for i in range(4)]
    tok = TextTokenizer.train([r.text for r in records], vocab_size=40)
    tok.save(root / TOKENIZER_FILE)
    batch = collate(preprocessor_from_config(cfg, tok).process_all(records, progress=False))
    bundle = DataBundle(splits={}, classes=CLASSES, tasks={}, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    for variant, mods in (("kd", ["image", "text", "audio"]), ("two", ["image", "text"])):
        model = build_model(model_spec("tiny", modalities=mods, num_classes=2, vocab_size=tok.vocab_size,
                                       n_mels=12))
        opt = torch.optim.Adam(model.parameters(), lr=3e-2)
        for _ in range(10 if variant == "kd" else 0):  # the second model only serves the error paths
            loss = torch.nn.functional.cross_entropy(model(batch).logits, batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        if variant == "kd":
            with torch.no_grad():
                assert (model(batch).logits.argmax(1) == batch["label"]).all()  # it has learned the task
        save_model(model, root / "students" / variant, extra=checkpoint_extra(bundle, cfg))
        if variant == "kd":
            from mmdistill.export.onnx import export_onnx

            export_onnx(model, root / "export" / "kd.onnx", batch, checkpoint=root / "students" / "kd")
    # Real files of a "dark" sample; the WAV at 16 kHz is resampled to the model's 8 kHz.
    rec = _record(1, 0)
    Image.fromarray(rec.image).save(root / "dark.png")
    sf.write(root / "dark.wav", np.repeat(rec.audio, 2), 2 * RATE, subtype="FLOAT")
    return root


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = 0
    try:
        main(args)
    except SystemExit as exc:  # typer's standalone mode always exits
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _expected_probs(run_dir: Path, **given: Any) -> np.ndarray:
    """The probabilities of the checkpoint on the in-memory record, preprocessed as in training."""
    from mmdistill.models.checkpoint import load_model

    model, extra = load_model(run_dir / "students" / "kd")
    cfg = Config.model_validate({"data": extra["preprocessing"]})
    pre = preprocessor_from_config(cfg, TextTokenizer.load(run_dir / TOKENIZER_FILE))
    rec = _record(1, 0)
    raw = RawSample(id="x", label=0, split="test", sample_rate=RATE,
                    **{m: getattr(rec, m) for m in given})
    with torch.no_grad():
        return torch.softmax(model(collate([pre(raw)])).logits, -1)[0].double().numpy()


def test_eager_and_onnx_predict_match_training_preprocessing(run_dir: Path, capsys) -> None:
    text = "a dark picture number 0"
    files = ["--image", str(run_dir / "dark.png"), "--text", text, "--audio", str(run_dir / "dark.wav")]
    expected = _expected_probs(run_dir, image=1, text=1, audio=1)
    runtimes = {"pytorch": run_dir / "students" / "kd", "onnxruntime": run_dir / "export" / "kd.onnx"}
    probs = {}
    for runtime, model in runtimes.items():
        code, out, err = _cli(["predict", str(model), *files, "--top", "5", "--json"], capsys)
        assert code == 0, err
        result = json.loads(out)
        assert result["runtime"] == runtime and result["label"] == "dark" and result["index"] == 1
        assert [r["class"] for r in result["top"]] == ["dark", "bright"]  # --top is capped at K = 2
        got = {r["index"]: r["probability"] for r in result["top"]}
        # PNG is lossless and the WAV resampling 16k → 8k nearly so: the numbers of training.
        np.testing.assert_allclose([got[0], got[1]], expected, atol=2e-3)
        assert sum(got.values()) == pytest.approx(1.0)
        probs[runtime] = [got[0], got[1]]
    np.testing.assert_allclose(probs["onnxruntime"], probs["pytorch"], atol=1e-5)  # one input, two runtimes


def test_modalities_may_be_omitted_and_table_output(run_dir: Path, capsys) -> None:
    onnx_file, image = run_dir / "export" / "kd.onnx", run_dir / "dark.png"
    code, out, err = _cli(["predict", str(onnx_file), "--image", str(image), "--top", "1"], capsys)
    assert code == 0, err
    assert "prediction:" in out and "onnxruntime" in out and "probability" in out
    expected = _expected_probs(run_dir, image=1)
    assert f"{expected.max():.4f}" in out and CLASSES[int(expected.argmax())] in out
    assert CLASSES[1 - int(expected.argmax())] not in out.split("probability")[1]  # --top 1: one row


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda r: [str(r / "students" / "kd"), "--image", str(r / "missing.png")],
         "missing.png: image file not found"),
        (lambda r: [str(r / "students" / "two"), "--audio", str(r / "dark.wav")],
         "reads image, text, not audio; drop --audio"),
        (lambda r: [str(r / "lonely.onnx"), "--text", "hi"], "lonely.onnx.json is missing"),
        (lambda r: [str(r / "students" / "kd")], "give at least one input"),
        (lambda r: [str(r / "nowhere"), "--text", "hi"], "nowhere: not found; pass a checkpoint folder"),
    ],
)
def test_user_errors_exit_2_with_a_message_naming_the_file(run_dir: Path, capsys, make_args, message) -> None:
    shutil.copyfile(run_dir / "export" / "kd.onnx", run_dir / "lonely.onnx")  # no sidecar
    code, _, err = _cli(["predict", *make_args(run_dir)], capsys)
    assert code == 2
    assert message in " ".join(err.split()) and "Traceback" not in err
