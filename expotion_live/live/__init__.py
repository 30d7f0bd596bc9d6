"""The live app, composed in one place: the session and its thread map (`session.py`), the music
source (`source.py`) and the controls (`controller.py`). The headless `run` command
(`commands/run.py`) and the window (`ui/`, widgets and a thin Qt bridge) drive the same parts."""
