"""The shipped model bundles: what they hold, and a clear error and doctor line when one is gone."""
import importlib.metadata
import subprocess
import sys
import zipfile

import pytest

from expotion_live import doctor
from expotion_live.features import landmarkers

BUNDLES = {
    landmarkers.FACE_MODEL: {"face_detector.tflite", "face_landmarks_detector.tflite"},
    landmarkers.POSE_MODEL: {"pose_detector.tflite", "pose_landmarks_detector.tflite"},
    **{path: {"hand_detector.tflite", "hand_landmarks_detector.tflite"} for path in landmarkers.HAND_MODELS.values()},
}


@pytest.mark.parametrize("path", BUNDLES, ids=lambda path: path.name)
def test_each_bundle_is_an_uncompressed_zip_of_its_models(path):
    with zipfile.ZipFile(path) as bundle:
        assert {info.filename for info in bundle.infolist()} == BUNDLES[path]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in bundle.infolist())


def test_the_models_come_with_their_licence():
    assert "Apache License" in (landmarkers.MODELS_DIR / "LICENSE").read_text()


def test_the_hand_landmarker_loads_both_sizes():
    for size in landmarkers.HAND_MODELS:
        landmarkers.hand_landmarker(size).close()
    with pytest.raises(ValueError, match="hand model must be one of lite, full"):
        landmarkers.hand_landmarker("heavy")


def test_a_missing_bundle_is_a_one_line_error_and_a_doctor_failure(monkeypatch, tmp_path):
    missing = tmp_path / "face_landmarker.task"
    monkeypatch.setattr(landmarkers, "FACE_MODEL", missing)
    with pytest.raises(landmarkers.TrackerModelMissing) as error:
        landmarkers.face_landmarker()
    message = str(error.value)
    assert "\n" not in message and str(missing) in message and "git checkout" in message
    (check,) = doctor.check_trackers()
    assert not check.ok and check.needed_for_show and str(missing) in check.detail


def test_a_tracker_dropped_inside_a_reference_cycle_is_collected_without_hanging():
    # mediapipe 1.x tasks close through a dispatcher thread of their own; collected in a cycle
    # without a finalizer, that thread goes first and the collection waits forever.
    code = (
        "import gc\n"
        "from expotion_live.features.tracker import Tracker\n"
        "from expotion_live.settings import TrackingSettings\n"
        "tracker = Tracker(TrackingSettings(hands=True))\n"
        "tracker.me = tracker\n"
        "del tracker\n"
        "gc.collect()\n"
        "print('collected')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "collected", done.stderr[-2000:]


def test_mediapipe_brings_the_only_opencv():
    # Two OpenCV distributions overwrite each other's cv2 package (whichever installed last wins).
    names = {dist.metadata["Name"].lower() for dist in importlib.metadata.distributions()}
    assert {name for name in names if name.startswith("opencv")} == {"opencv-contrib-python"}
