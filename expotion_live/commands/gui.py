"""Subcommands of the performer's app: `gui` (the window) and `export` (a performance video).

Handlers take the parsed args and the Settings, return an exit code, and turn every
expected failure into one actionable line on stderr.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from .. import settings as settings_mod
from ..outputs.osc.targets import OscTargetError, parse_targets
from ..settings import Settings
from .common import fail, number


def add_parser(subparsers) -> None:
    gui = subparsers.add_parser("gui", help="open the performer's window (camera, tracking, music, OSC)")
    gui.add_argument("--camera", metavar="SPEC", help="camera index, name, or a video file to rehearse with")
    gui.add_argument("--osc", metavar="[MODE@]HOST:PORT", action="append",
                     help="OSC destination (repeatable; replaces [osc] targets), e.g. 127.0.0.1:9000, faceosc@127.0.0.1")
    gui.add_argument("--start", action="store_true", help="start playing as soon as the window opens")
    gui.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the screen after --quit-after seconds")
    gui.add_argument("--quit-after", metavar="S", type=number(float, 0.0, 24 * 3600),
                     help="close the window after S seconds (demos, CI); settings changed in it are still saved")
    gui.set_defaults(handler=run_gui)

    export = subparsers.add_parser(
        "export", help="export a performance: camera video with the tracking overlay plus the played audio",
        description="Tracks VIDEO again, draws the overlay and muxes AUDIO (e.g. the WAV written by "
                    "[audio] out / --out) into one MP4 with ffmpeg.")
    export.add_argument("--video", required=True, help="the camera (or rehearsal) video of the performance")
    export.add_argument("--audio", required=True, help="the audio that was played (WAV)")
    export.add_argument("--out", required=True, help="the MP4 to write")
    export.add_argument("--mirror", action="store_true", help="mirror the picture (as the preview shows it)")
    export.set_defaults(handler=run_export)


# Qt platforms that draw without a desktop (QT_QPA_PLATFORM): tests, screenshots, remote viewers
WINDOWLESS_QT_PLATFORMS = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb")


def display_problem() -> str:
    """Why the window cannot open here ("" when it can): Qt would abort with its plugin text instead."""
    from ..doctor import check_display

    if os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] in WINDOWLESS_QT_PLATFORMS:
        return ""
    display = check_display()[0]
    return "" if display.ok else f"{display.detail}: {display.fix}"


def run_gui(args, settings: Settings) -> int:
    if problem := display_problem():
        print(f"expotion-live gui: {problem}", file=sys.stderr)
        return 2
    overrides: dict[str, object] = {}
    if args.camera:
        overrides["camera.source"] = args.camera
    if args.osc:
        overrides["osc.targets"] = tuple(args.osc)
    settings = settings_mod.override(settings, overrides)
    try:
        parse_targets(settings.osc.targets, settings.osc.mode)
    except OscTargetError as err:
        return fail(str(err))
    from PyQt6.QtCore import QTimer
    from PyQt6.QtWidgets import QApplication

    from ..presets import presets_dir
    from ..ui.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    # the performer's changes go back to the file the settings came from: --config FILE, else the default one
    settings_path = Path(getattr(args, "config", None) or settings_mod.default_path())
    window = MainWindow(settings, settings_path, presets_dir(settings_path))
    window.show()
    if args.start:
        QTimer.singleShot(0, window.start)
    if args.quit_after is not None:
        def finish() -> None:
            if args.screenshot:
                save_screenshot(window, Path(args.screenshot))
            window.close()
        QTimer.singleShot(round(args.quit_after * 1000), finish)
    # Ctrl-C, SIGTERM and SIGHUP close the window like its close button (changes saved, recording
    # kept); Python runs signal handlers only between bytecodes, so a timer lets it in while Qt waits.
    previous = {sig: signal.signal(sig, lambda *_: window.close())
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    wake = QTimer(interval=200)
    wake.timeout.connect(lambda: None)
    wake.start()
    try:
        return app.exec()
    finally:
        wake.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        window.shutdown()


def save_screenshot(window, path: Path) -> Path:
    """The whole screen as the display shows it (under Xvfb: the real X framebuffer)."""
    from ..atomic import atomic_path

    screen = window.screen()
    pixmap = screen.grabWindow(0)
    if pixmap.isNull():                 # platforms without screen grabbing (offscreen)
        pixmap = window.grab()
    with atomic_path(path) as tmp:
        if not pixmap.save(str(tmp), "PNG"):
            raise OSError(f"could not write screenshot {path}")
    return path


def run_export(args, settings: Settings) -> int:
    from ..media import MediaError
    from ..ui.export import export_performance

    try:
        out = export_performance(args.video, args.audio, args.out, settings.tracking, mirror=args.mirror)
    except MediaError as err:
        return fail(str(err))
    print(f"wrote {out}")
    return 0
