"""spoken_strings (eSpeak NG speech): determinism, held-out voices, noise, features, SpecAugment,
and that reading it never loads eSpeak."""

from __future__ import annotations

import itertools
import subprocess
import sys
import wave

import numpy as np
import pytest
import scipy.signal

import attn.data
from attn.data import audio_features, spoken_strings
from attn.data.speech_synthesis import Utterance, add_noise, render_chunks

SIZES = {"num_train": 16, "num_validation": 4, "num_test": 5}


def _config(data_dir, **overrides) -> dict:
    return {"name": "spoken_strings", "data_dir": str(data_dir), "batch_size": 4, **SIZES} | (
        overrides
    )


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory) -> str:
    data_dir = tmp_path_factory.mktemp("speech")
    attn.data.get_task(_config(data_dir))  # generates once for the module
    return str(data_dir)


def _records(task: attn.data.Task) -> dict[str, list[dict]]:
    return {split: [source[i] for i in range(len(source))] for split, source in task.splits.items()}


def test_same_seed_gives_identical_records_and_another_seed_does_not(speech_dir, tmp_path):
    first = _records(attn.data.get_task(_config(speech_dir)))
    second = _records(attn.data.get_task(_config(tmp_path)))
    assert {split: len(records) for split, records in first.items()} == {
        "train": 16,
        "validation": 4,
        "test": 5,
    }
    for split in first:
        for a, b in zip(first[split], second[split], strict=True):
            assert a.keys() == b.keys() == {"audio", "transcript", "voice", "rate", "snr_db"}
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    other = attn.data.get_task(_config(tmp_path, data_seed=1, num_train=1, num_test=1))
    assert not np.array_equal(
        other.splits["validation"][0]["audio"], first["validation"][0]["audio"]
    )


def test_evaluation_voices_are_disjoint_from_training_voices(speech_dir):
    train, held_out = spoken_strings.split_voices("train"), spoken_strings.split_voices("test")
    assert spoken_strings.split_voices("validation") == held_out
    assert not set(train) & set(held_out)
    every = {
        f"{a}+{v}" for a, v in itertools.product(spoken_strings.ACCENTS, spoken_strings.VARIANTS)
    }
    assert set(train) | set(held_out) == every
    assert (len(train), len(held_out)) == (84, 36)
    for name in (*spoken_strings.HELD_OUT_ACCENTS, *spoken_strings.HELD_OUT_VARIANTS):
        assert f"``{name}``" in spoken_strings.__doc__  # the docstring records the split
    records = _records(attn.data.get_task(_config(speech_dir)))
    for split, voices in (("train", train), ("validation", held_out), ("test", held_out)):
        assert all(record["voice"].decode() in voices for record in records[split])


def test_records_hold_transcripts_of_the_grammar_within_max_frames(speech_dir):
    task = attn.data.get_task(_config(speech_dir))
    words = {*spoken_strings.DIGITS, "stop", "go", "wait", "turn", "left", "right", "around"}
    words |= {"back", "move", "up", "down", "forward"}
    for record in _records(task)["train"]:
        assert set(record["transcript"].decode().split()) <= words
        assert 10.0 <= record["snr_db"] <= 30.0 and 130 <= record["rate"] <= 450
        assert record["audio"].dtype == np.int16
        assert audio_features.num_frames(len(record["audio"])) <= 400
        assert np.abs(record["audio"]).max() > 1000  # speech, not silence


@pytest.mark.parametrize(("snr_db", "slope"), [(10.0, 0.0), (17.5, -1.0), (30.0, -0.5)])
def test_noise_has_the_asked_snr_and_colour(snr_db, slope):
    rng = np.random.default_rng(0)
    speech = np.sin(np.arange(12_000) / 7.0) * rng.uniform(0.1, 1.0, 12_000)
    noise = add_noise(speech, rng, snr_db, slope, 15_000)
    measured = 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))
    assert noise.shape == (15_000,) and measured == pytest.approx(snr_db, abs=1e-9)
    power = np.abs(np.fft.rfft(noise)) ** 2
    low, high = power[10:500].mean(), power[-2000:].mean()
    assert (low / high > 10) if slope == -1.0 else (low / high < 10)


def _mel(hz: float) -> float:
    return 2595 * np.log10(1 + hz / 700)


def _independent_log_mel(waveform: np.ndarray) -> np.ndarray:
    """scipy's STFT and a mel matrix built by loops, for comparison with log_mel."""
    window = scipy.signal.get_window("hann", 400)  # periodic Hann
    _, _, stft = scipy.signal.stft(
        waveform,
        16_000,
        window,
        nperseg=400,
        noverlap=240,
        nfft=512,
        boundary=None,
        padded=False,
        detrend=False,
    )
    power = np.abs(stft.T * window.sum()) ** 2  # scipy scales by 1 / sum(window)
    hz_edges = 700 * (10 ** (np.linspace(_mel(20.0), _mel(8000.0), 82) / 2595) - 1)
    bank = np.zeros((257, 80))
    for m in range(80):
        lower, centre, upper = hz_edges[m : m + 3]
        for k in range(257):
            hz = k * 16_000 / 512
            if lower <= hz <= centre:
                bank[k, m] = (hz - lower) / (centre - lower)
            elif centre < hz <= upper:
                bank[k, m] = (upper - hz) / (upper - centre)
    return np.log(np.maximum(power @ bank, 1e-10))


def test_log_mel_matches_an_independent_computation_and_finds_a_tone():
    rng = np.random.default_rng(1)
    waveform = (0.3 * rng.standard_normal(8_000)).astype(np.float32)
    features = audio_features.log_mel(waveform)
    assert features.shape == (audio_features.num_frames(8_000), 80) == (48, 80)
    np.testing.assert_allclose(features, _independent_log_mel(waveform), atol=2e-3)
    # A 1 kHz tone lands in the triangle whose centre is nearest 1 kHz.
    tone = np.sin(2 * np.pi * 1000 * np.arange(16_000) / 16_000)
    loudest = audio_features.log_mel(tone).mean(axis=0).argmax()
    centres = np.linspace(_mel(20.0), _mel(8000.0), 82)[1:-1]
    assert loudest == np.abs(centres - _mel(1000.0)).argmin()
    # At 8 kHz the waveform is resampled first: twice the samples' frames.
    assert len(audio_features.log_mel(waveform[:4_000], 8_000)) == 48


def test_batches_follow_the_audio_contract(speech_dir):
    task = attn.data.get_task(_config(speech_dir, time_masks=0, freq_masks=0))
    assert task.augment is None
    assert (task.kind, task.audio_shape, task.target_vocab_size) == ("seq2seq", (400, 80), 30)
    assert attn.data.audio_shape_of(_config(speech_dir, max_frames=300)) == (300, 80)
    assert attn.data.audio_shape_of({"name": "reverse"}) is None
    batches = list(task.eval_batches("test"))  # 5 examples: the second batch has 3 padding rows
    batch = batches[1]
    assert batch["inputs"].shape == (4, 400, 80) and batch["inputs"].dtype == np.float32
    assert batch["input_lengths"].dtype == np.int32 and batch["targets"].shape == (4, 42)
    np.testing.assert_array_equal(batch["input_lengths"][1:], 0)
    np.testing.assert_array_equal(batch["weights"][1:], 0)
    record = task.splits["test"][4]
    length = audio_features.num_frames(len(record["audio"]))
    assert batch["input_lengths"][0] == length
    real = batch["inputs"][0, :length]
    np.testing.assert_allclose(real.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(real.std(axis=0), 1, atol=1e-3)
    assert not batch["inputs"][0, length:].any()
    targets = batch["targets"][0]
    assert task.target_tokenizer.decode(targets) == record["transcript"].decode()
    assert targets[(targets != 0).sum() - 1] == attn.data.EOS_ID
    np.testing.assert_array_equal(batch["weights"][0], targets != 0)


def test_spec_augment_masks_train_batches_only_and_repeats_per_step(speech_dir):
    plain = attn.data.get_task(_config(speech_dir, time_masks=0, freq_masks=0))
    masked = attn.data.get_task(_config(speech_dir, freq_mask_width=8, time_mask_width=5))
    again = attn.data.get_task(_config(speech_dir, freq_mask_width=8, time_mask_width=5))
    for step in (0, 3):
        original, augmented = plain.train_batch(step), masked.train_batch(step)
        np.testing.assert_array_equal(augmented["inputs"], again.train_batch(step)["inputs"])
        changed = augmented["inputs"] != original["inputs"]
        assert changed.any() and not augmented["inputs"][changed].any()  # masked to 0
        for b, length in enumerate(original["input_lengths"]):
            rows = changed[b].any(axis=1)
            assert not rows[length:].any()  # never past the utterance
            assert changed[b, :length].all(axis=1).sum() <= 2 * 5  # whole frames masked
            assert changed[b, :length].all(axis=0).sum() <= 2 * 8  # whole bins masked
        for key in ("input_lengths", "targets", "weights"):
            np.testing.assert_array_equal(augmented[key], original[key])
    np.testing.assert_array_equal(
        next(masked.eval_batches("validation"))["inputs"],
        next(plain.eval_batches("validation"))["inputs"],
    )


def test_too_long_audio_fails_clearly_and_bad_keys_are_rejected():
    with pytest.raises(ValueError, match=r"does not fit max_frames=10; raise data\.max_frames"):
        audio_features.utterance_features(np.zeros(16_000, np.float32), 16_000, 10)
    with pytest.raises(ValueError, match="max_frames"):
        attn.data.check_config({"name": "spoken_strings", "max_frames": 50})
    with pytest.raises(ValueError, match="time_masks"):
        attn.data.check_config({"name": "spoken_strings", "time_masks": -1})


def test_read_wav_gives_16khz_mono(tmp_path):
    path = tmp_path / "stereo.wav"
    left = (np.sin(np.arange(8_000) / 5.0) * 20_000).astype("<i2")
    with wave.open(str(path), "wb") as file:
        file.setnchannels(2)
        file.setsampwidth(2)
        file.setframerate(8_000)
        file.writeframes(np.stack([left, left // 2], axis=1).tobytes())
    waveform, rate = audio_features.read_wav(path)
    assert rate == 16_000 and waveform.dtype == np.float32 and waveform.shape == (16_000,)
    np.testing.assert_allclose(waveform[1000:15000:2], 0.75 * left[500:7500] / 32768, atol=0.02)
    with pytest.raises(ValueError, match="cannot read WAV"):
        audio_features.read_wav(tmp_path / "missing.wav")


def test_reading_generated_speech_never_imports_espeak(speech_dir):
    code = (
        "import sys\nsys.modules['espeakng_loader'] = None\n"  # any import of it would fail
        "import attn, attn.data\n"
        f"task = attn.data.get_task({_config(speech_dir)!r})\n"
        "batch = task.train_batch(0)\n"
        "print(batch['inputs'].shape, [m for m, v in sys.modules.items() if 'espeak' in m and v])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "(4, 400, 80) []"


def test_a_clip_too_long_for_max_frames_is_said_faster_to_fit():
    slow = Utterance(
        text=" ".join(["seven"] * 7),
        voice="en-us+m4",
        rate=130,
        pitch=50,
        pitch_range=50,
        snr_db=20.0,
        noise_slope=0.0,
        gain_db=3.0,
        shift=0.99,
        noise_seed=0,
    )
    limit = audio_features.max_samples(250)  # 2.5 s: this clip takes about 4 s at 130 wpm
    [[(audio, rate)]] = list(render_chunks([[slow]], limit, 16_000))
    assert rate > 130 and audio_features.num_frames(len(audio)) <= 250
    assert len(audio) > audio_features.max_samples(200)  # not cut: still most of the room
