"""The speech experiments beyond their smoke runs (tests/train/test_loop.py): CER and WER in
`attn eval`, `attn plot --audio` of a WAV file written here, wrong input flags refused, and
exact resume with SpecAugment."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from attn import cli
from attn.train import train_and_evaluate

from .helpers import ROOT, assert_same_params, assert_smoke_workdir, params_of, smoke

pytestmark = pytest.mark.slow  # trains

SPEECH_LAS = str(ROOT / "experiments" / "speech_las.py")


def _write_wav(path: Path, seconds: float, rate: int) -> None:
    """A 16-bit mono WAV: two tones one after the other, over a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    tone = np.where(t < seconds / 2, np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 900 * t))
    noise = np.random.default_rng(0).normal(scale=0.05, size=t.shape)
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes((np.clip(0.5 * tone + noise, -1, 1) * 32767).astype("<i2").tobytes())


def test_las_resumes_exactly_eval_reports_error_rates_and_plot_transcribes_a_wav(tmp_path, capsys):
    """SpecAugment's masks are drawn from (seed, step): a run stopped half way and resumed
    ends with the parameters of one that never stopped. On that run, `attn eval` reports CER
    and WER and `attn plot --audio` transcribes a WAV file and draws where the model listened.
    (speech_transformer's smoke run, with its plots, is in tests/train/test_loop.py.)"""
    config = smoke(SPEECH_LAS, **{"train.num_steps": 4})
    assert config.data.get("time_masks", 2) > 0  # masking is on in the smoke variant
    whole = tmp_path / "whole"
    final = train_and_evaluate(config, whole)
    train_and_evaluate(smoke(SPEECH_LAS, **{"train.num_steps": 2}), tmp_path / "halves")
    train_and_evaluate(config, tmp_path / "halves")
    assert_same_params(params_of(tmp_path / "halves"), params_of(whole))
    assert_smoke_workdir(whole)
    assert np.isfinite(final["eval"]["cer"]) and np.isfinite(final["eval"]["wer"])

    capsys.readouterr()
    assert cli.main(["eval", "--workdir", str(whole)]) == 0
    printed = capsys.readouterr().out
    assert ", cer " in printed and ", wer " in printed
    # A user's recording at another sample rate is resampled to 16 kHz.
    clip = tmp_path / "clip.wav"
    _write_wav(clip, 1.2, 22_050)
    assert cli.main(["plot", "--workdir", str(whole), "--audio", str(clip)]) == 0
    transcript, picture = capsys.readouterr().out.splitlines()
    assert transcript.startswith(f"{clip}: '")
    assert Path(picture).name == "attention_frames_example0_audio.png"
    assert Path(picture).stat().st_size > 1000
    assert cli.main(["plot", "--workdir", str(whole), "--image", str(clip)]) == 2
    assert "inputs are audio: pass --audio, not --image" in capsys.readouterr().err
    long_clip = tmp_path / "long.wav"
    _write_wav(long_clip, 3.5, 16_000)  # 349 frames: more than the smoke's max_frames=300
    assert cli.main(["plot", "--workdir", str(whole), "--audio", str(long_clip)]) == 2
    assert "raise data.max_frames" in capsys.readouterr().err
